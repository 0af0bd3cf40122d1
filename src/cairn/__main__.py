from cairn.cli.launch import entry

entry()

"""Write a sample VM disk image and config for the demo.

The image mixes what real disks hold: zero runs (holes after a fresh install), blocks that
repeat (the same binaries in several places), random data, and a tail that is not a multiple
of the 4 MiB chunk size.
"""

import random
import sys
from pathlib import Path

MIB = 1024 * 1024


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    repeated = rng.randbytes(4 * MIB)
    with open(out / "vm-100-disk-0.raw", "wb") as image:
        for block in range(24):
            if block % 4 == 0:
                image.seek(4 * MIB, 1)  # a zero run, left as a hole
            elif block % 4 == 1:
                image.write(repeated)
            else:
                image.write(rng.randbytes(4 * MIB))
        image.write(rng.randbytes(12345))  # odd-sized tail
        image.truncate()
    (out / "100.conf").write_text(
        "boot: order=scsi0\ncores: 2\nmemory: 2048\nname: demo-vm\n"
        "scsi0: local-lvm:vm-100-disk-0,size=96G\n"
    )
    # a small container root file system: a few directories, texts, a symlink, a hardlink
    root = out / "ct-101-rootfs"
    for sub in ("etc/network", "usr/bin", "var/log", "home/alice"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("ct101\n")
    (root / "etc/network/interfaces").write_text("auto eth0\niface eth0 inet dhcp\n")
    (root / "usr/bin/tool").write_bytes(rng.randbytes(300_000))
    (root / "usr/bin/tool").chmod(0o755)
    (root / "var/log/syslog").write_text("".join(f"Nov 22 02:00:{i % 60:02d} ct101 demo[{i}]: line {i}\n" for i in range(20000)))
    (root / "home/alice/notes.txt").write_text("remember the milk\n")
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (root / "usr/bin/tool-alias").hardlink_to(root / "usr/bin/tool")


if __name__ == "__main__":
    main(sys.argv[1])

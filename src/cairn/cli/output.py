"""Printing listings as a table (text) or as JSON with PBS's field names."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Sequence

import click

FORMATS = ("text", "json", "json-pretty")

output_format_option = click.option(
    "--output-format", type=click.Choice(FORMATS), default="text", show_default=True,
    help="Listing format; JSON uses PBS's field names.",
)


def emit(
    rows: list[dict[str, Any]], fmt: str, columns: Sequence[tuple[str, str, Callable[[dict], str]]],
    title: str | None = None,
) -> None:
    """``columns`` are (key, header, render) for the text table; JSON prints ``rows`` as is."""
    if fmt == "json":
        click.echo(json.dumps(rows, separators=(",", ":")))
        return
    if fmt == "json-pretty":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for _, header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(render(row) for _, _, render in columns))
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)


def emit_value(value: dict[str, Any], fmt: str, lines: list[tuple[str, str]]) -> None:
    """A single object: JSON, or ``label: value`` lines."""
    if fmt == "json":
        click.echo(json.dumps(value, separators=(",", ":")))
    elif fmt == "json-pretty":
        click.echo(json.dumps(value, indent=2))
    else:
        width = max(len(label) for label, _ in lines) if lines else 0
        for label, text in lines:
            click.echo(f"{label.ljust(width)}  {text}")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")

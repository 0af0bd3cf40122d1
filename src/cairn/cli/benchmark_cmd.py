"""``cairn benchmark``: the speed of hashing, compression, encryption and chunk checks here."""

from __future__ import annotations

import json
import sys

import click

from cairn.cli.output import FORMATS
from cairn.client.benchmark import run_benchmark


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value / 1_000_000:.0f} MB/s"


@click.command()
@click.option("--seconds", type=click.FloatRange(min=0.001, max=60), default=1.0, show_default=True,
              help="How long to run each measurement.")
@click.option("--threads", type=click.IntRange(min=1, max=64), default=None,
              help="Worker threads for the parallel rate (default: as backups use, one per CPU up to 8).")
@click.option("--output-format", type=click.Choice(FORMATS), default="text", show_default=True)
def benchmark(seconds: float, threads: int | None, output_format: str) -> None:
    """Measure SHA-256, zstd, AES-256-GCM and chunk verification speed on this machine.

    Each rate is measured on one thread and on the backup worker threads together; the
    last column compares the one-thread rate with the reference PBS's benchmark uses.
    """
    if output_format == "text" and sys.stderr.isatty():
        click.echo("measuring ...", err=True)
    results = run_benchmark(seconds, threads)
    if output_format != "text":
        value = {r.name: r.to_json() for r in results}
        click.echo(json.dumps(value, indent=2 if output_format == "json-pretty" else None,
                              separators=None if output_format == "json-pretty" else (",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    workers = results[0].threads
    table = Table(title="Cairn benchmark (4 MiB chunks)")
    table.add_column("Name")
    table.add_column("1 thread", justify="right")
    table.add_column(f"{workers} threads", justify="right")
    table.add_column("% of PBS reference", justify="right")
    for r in results:
        if r.speed is None:
            table.add_row(r.label, "not measured (no server)", "", "")
            continue
        table.add_row(r.label, _rate(r.speed), _rate(r.speed_threads), f"{r.percent_of_reference:.0f} %")
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120).print(table)

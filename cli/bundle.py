"""``geoseg bundle``: look inside model bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def bundle() -> None:
    """Inspect model bundles (.safetensors)."""


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
def inspect(path: Path, as_json: bool) -> None:
    """Print the spec of the bundle at PATH (no tensors are loaded)."""
    from geoseg.models.bundle import read_spec, spec_summary

    spec = read_spec(path)
    click.echo(json.dumps(spec.to_dict(), indent=2) if as_json else spec_summary(spec))

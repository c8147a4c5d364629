"""``geoseg bundle``: look inside model bundles."""

from __future__ import annotations

import json

import click


@click.group()
def bundle() -> None:
    """Inspect model bundles (.safetensors)."""


@bundle.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
def inspect(path: str, as_json: bool) -> None:
    """Print the spec of the bundle PATH, or of a default model by name (no tensors loaded)."""
    from geoseg.models import resolve_model_path
    from geoseg.models.bundle import read_spec, spec_summary

    spec = read_spec(resolve_model_path(path))
    click.echo(json.dumps(spec.to_dict(), indent=2) if as_json else spec_summary(spec))

"""``geoseg models``."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List default models, architectures and backbones."""
    from geoseg.models import ARCHITECTURES, list_models

    trained = list_models()
    archs = ARCHITECTURES.names()
    aliases = ARCHITECTURES.aliases()
    if as_json:
        click.echo(json.dumps({"models": trained, "architectures": archs,
                               "aliases": aliases}, indent=2))
        return
    click.echo("Default models (use with --model NAME):")
    for m in trained:
        state = "" if m["available"] else "  [missing: " + m["path"] + "]"
        click.echo(f"  {m['name']:<12} {m['description']}{state}")
        if m["available"]:
            gsd = f", {m['gsd_m']:g} m" if m.get("gsd_m") else ""
            click.echo(f"  {'':<12}   bands {','.join(m['bands'])}{gsd}; classes "
                       + ",".join(c["name"] for c in m["classes"]))
            about = [m["input_kind"] and f"input: {m['input_kind']}",
                     m["license"] and f"licence {m['license']}", m["attribution"]]
            if any(about):
                click.echo(f"  {'':<12}   " + "; ".join(a for a in about if a))
    click.echo("\nArchitectures (geoseg train --model NAME):")
    for a in archs:
        al = [k for k, v in aliases.items() if v == a]
        click.echo(f"  {a}" + (f"  (alias: {', '.join(al)})" if al else ""))
    click.echo("\nBackbones: any segmentation_models_pytorch encoder (resnet18, mobilenet_v2, "
               "efficientnet-b0, ...), or any timm model as tu-NAME; pixel (per-pixel "
               "network for multispectral data) takes none.")

"""``geoseg qgis``: install the QGIS Processing plugin, or zip it for the plugin manager."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from importlib.resources import as_file, files
from pathlib import Path

import click
from geoseg.cli import options

from geoseg.errors import InputError, OutputError

PLUGIN = "geoseg_qgis"


def plugin_source() -> Path:
    """Return the plugin folder shipped with geoseg (package data ``geoseg.qgis_plugin``)."""
    with as_file(files("geoseg.qgis_plugin") / PLUGIN) as path:
        if not (path / "metadata.txt").is_file():
            raise InputError(f"the QGIS plugin is missing from this install ({path}); "
                             "reinstall geoseg")
        return Path(path)


def default_profile_dir() -> Path:
    """QGIS 3's default profile for this OS (what QGIS uses without --profiles-path)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
        root = base / "QGIS" / "QGIS3"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    else:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        root = Path(data) / "QGIS" / "QGIS3"
    return root / "profiles" / "default"


def geoseg_executable() -> str:
    """Return the ``geoseg`` of this environment (what the plugin should run)."""
    exe = Path(sys.argv[0])
    if exe.name.startswith("geoseg") and exe.is_file():
        return str(exe.resolve())
    found = shutil.which("geoseg", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return str(Path(found).resolve()) if found else str(Path(sys.executable).with_name("geoseg"))


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}


def _enable(profile: Path, exe: str) -> Path:
    """Enable the plugin and set 'geoseg executable' in the profile's QGIS3.ini.

    QGIS's ini is Qt's QSettings format, which configparser rewrites wrongly (keys with
    backslashes, case), so only the two lines concerned are edited, in place.
    """
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.exists() else []
    value = exe.replace("\\", "\\\\")
    for section, key, val in (("PythonPlugins", PLUGIN, "true"),
                              ("Processing", "Configuration\\GEOSEG_EXECUTABLE", value)):
        header = f"[{section}]"
        if header not in lines:
            lines += ["", header] if lines else [header]
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        for i in range(start, end):
            if lines[i].split("=", 1)[0].strip() == key:
                lines[i] = f"{key}={val}"
                break
        else:
            # insert before trailing blank lines of the section
            while end > start and not lines[end - 1].strip():
                end -= 1
            lines.insert(end, f"{key}={val}")
    ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ini


@click.group()
def qgis() -> None:
    """Install the GeoSeg plugin for QGIS's Processing toolbox.

    \b
    geoseg qgis install                 # link the plugin into QGIS's default profile
    geoseg qgis install --enable        # ... and enable it (with QGIS closed)
    geoseg qgis zip -o geoseg_qgis.zip  # for Plugins > Install from ZIP
    """


@qgis.command()
@click.option("--profile-dir", type=click.Path(file_okay=False, path_type=Path),
              help="QGIS profile folder (default: this OS's 'default' profile).")
@click.option("--copy", "copy", is_flag=True,
              help="Copy the files instead of linking (a link follows geoseg upgrades).")
@click.option("--enable", is_flag=True,
              help="Also enable the plugin and set the geoseg executable in the profile's "
                   "QGIS3.ini (close QGIS first: it rewrites the file on exit).")
@options.overwrite_opt
def install(profile_dir: Path | None, copy: bool, enable: bool, overwrite: bool) -> None:
    """Install the GeoSeg plugin into a QGIS profile and say what to set."""
    src = plugin_source()
    profile = (profile_dir or default_profile_dir()).expanduser().absolute()
    dst = profile / "python" / "plugins" / PLUGIN
    linked = dst.is_symlink() and dst.resolve() == src.resolve()
    if (dst.is_symlink() or dst.exists()) and not (linked and not copy):
        if not overwrite:
            raise OutputError(f"{dst} exists; pass --overwrite to replace it")
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        else:
            shutil.rmtree(dst)
        linked = False
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not linked and not copy:
        try:
            dst.symlink_to(src, target_is_directory=True)
            linked = True
        except OSError:  # Windows without developer mode: no symlinks
            pass
    if not linked:
        shutil.copytree(src, dst, ignore=_ignore)
    exe = geoseg_executable()
    click.echo(f"GeoSeg plugin linked: {dst} -> {src}" if linked
               else f"GeoSeg plugin copied to {dst}")
    if enable:
        ini = _enable(profile, exe)
        click.echo(f"Enabled in {ini}, with geoseg executable = {exe}")
    else:
        click.echo("Then, in QGIS:\n"
                   "  1. Plugins > Manage and Install Plugins > Installed: tick 'GeoSeg'.\n"
                   "  2. Settings > Options > Processing > Providers > GeoSeg > "
                   "'geoseg executable':\n"
                   f"       {exe}\n"
                   "     (or set the environment variable GEOSEG_EXECUTABLE to it).")
    click.echo("The algorithms are in the Processing Toolbox under GeoSeg.")


@qgis.command(name="zip")
@options.output_opt(help="Zip file to write (Plugins > Manage and Install Plugins > "
                         "Install from ZIP).")
@options.overwrite_opt
def zip_(output: Path, overwrite: bool) -> None:
    """Zip the GeoSeg plugin for QGIS's plugin manager."""
    from geoseg._atomic import atomic_path

    src = plugin_source()
    with atomic_path(output, overwrite=overwrite) as tmp, \
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if path.is_file() and not _ignore("", list(rel.parts)):
                zf.write(path, f"{PLUGIN}/{rel.as_posix()}")
    click.echo(f"Wrote {output} (Plugins > Manage and Install Plugins > Install from ZIP)")

"""The README's commands run as written, so the guide cannot rot.

Every fenced ``bash`` and ``python`` block of README.md is run, in order, in one scratch
folder that holds a link to the repository's ``examples/`` (the data that ships), as a user
would after the Quick start. A block is skipped only when the line before its fence says
why, in an HTML comment the reader does not see:

- ``<!-- readme-test: skip REASON -->``: the set-up itself (CI runs it), or a command that
  needs a cluster, a GPU or the network.
- ``<!-- readme-test: needs data/NAME -->``: public data the repository does not ship (the
  README says where it comes from); the block runs with ``data/`` linked to the test data
  folder when ``NAME`` is there (``$GEOSEG_DATA``, see conftest) and is skipped
  otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(bash|python)\s*$")
_MARK = re.compile(r"<!--\s*readme-test:\s*(skip|needs)\s+(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, line number and what the marker says."""

    lang: str
    text: str
    line: int
    skip: str | None = None
    needs: str | None = None

    @property
    def name(self) -> str:
        first = next((ln for ln in self.text.splitlines() if ln and not ln.startswith("#")),
                     "")
        return f"L{self.line}-{first[:40]}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced bash/python blocks of ``text`` with their markers."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        mark = _MARK.search(prev)
        blocks.append(Block(m.group(1), "\n".join(lines[i + 1:j]), i + 1,
                            skip=mark.group(2) if mark and mark.group(1) == "skip" else None,
                            needs=mark.group(2) if mark and mark.group(1) == "needs" else None))
        i = j + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_readme_has_runnable_blocks() -> None:
    assert sum(b.skip is None for b in BLOCKS) >= 5, "the guide lost its commands"


def test_readme_stands_alone() -> None:
    """Users have only the repository: no pointers to the team's shared folder."""
    text = README.read_text()
    for needle in ("../shared", "DESIGN.md", "STYLE.md"):
        hits = [ln for ln in text.splitlines() if needle in ln and "readme-test:" not in ln]
        assert not hits, hits


def test_readme_docs_links_exist() -> None:
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#\s]+)", README.read_text()):
        assert (ROOT / target).exists(), target


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    (work / "examples").symlink_to(ROOT / "examples")
    return work


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block_runs(block: Block, workdir: Path) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    if block.needs is not None:
        name = block.needs.removeprefix("data/")
        if not (SHARED_DATA / name).exists():
            pytest.skip(f"needs {block.needs}: public data not shipped with geoseg")
        if not (workdir / "data").exists():
            (workdir / "data").symlink_to(SHARED_DATA.resolve())
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "GEOSEG_README_TEST": "1"}
    if block.lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", block.text]
    else:
        cmd = [sys.executable, "-c", block.text]
    run = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=840, check=False)
    assert run.returncode == 0, (f"README line {block.line} failed:\n{block.text}\n"
                                 f"--- stderr ---\n{run.stderr[-3000:]}")
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def test_no_readme_output_lands_in_the_repository() -> None:
    """The blocks write into their scratch folder only."""
    assert shutil.which("git") is None or not subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard", "landcover.tif"],
        capture_output=True, text=True, check=False).stdout.strip()

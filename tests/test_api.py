"""The public verbs re-exported by ``geoseg``."""

from __future__ import annotations

import subprocess
import sys


def test_verbs_are_callable_before_and_after_submodule_imports() -> None:
    code = (
        "import geoseg\n"
        "names = ['predict', 'vectorize', 'score', 'score_objects', 'load_bundle', 'open_scene']\n"
        "assert all(callable(getattr(geoseg, n)) for n in names)\n"
        "import geoseg.vector.pipeline, geoseg.scoring.pipeline, geoseg.prediction.pipeline\n"
        "assert all(callable(getattr(geoseg, n)) for n in names)\n"
        "print(sorted(geoseg.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "'predict'" in out and "'vectorize'" in out

"""geoseg._atomic: locks between real processes, identity, special files, full disks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geoseg._atomic import (
    atomic_path,
    check_distinct,
    check_output,
    commit,
    destination_locks,
    lock_file,
    sweep_stale,
)
from geoseg.errors import DiskFullError, OutputError, OutputExistsError, OutputLockedError

HOLD = textwrap.dedent("""
    import sys, time
    from geoseg._atomic import destination_locks
    with destination_locks(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(dst: Path, seconds: float = 30.0) -> subprocess.Popen[str]:
    """Another process holding ``dst``'s lock (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(dst), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    proc = _holder(dst)
    try:
        with pytest.raises(OutputLockedError, match=rf"PID {proc.pid}\b"), \
                destination_locks(dst):
            pass
        # a symlink to the destination shares its lock
        link = tmp_path / "link.tif"
        link.symlink_to(dst)
        with pytest.raises(OutputLockedError), destination_locks(link):
            pass
    finally:
        proc.kill()
        proc.wait()
    with destination_locks(dst):  # the kernel released the dead holder's lock
        assert lock_file(dst).read_text().strip() == str(os.getpid())
    assert not lock_file(dst).exists()


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    with destination_locks(dst), destination_locks(dst, None):
        assert lock_file(dst).exists()
    assert not lock_file(dst).exists()


@pytest.mark.parametrize("make", ["fifo", "device-link", "dir"])
def test_only_regular_files_are_replaced(tmp_path: Path, make: str) -> None:
    dst = tmp_path / "out.tif"
    if make == "fifo":
        os.mkfifo(dst)
    elif make == "device-link":
        dst.symlink_to("/dev/null")
    else:
        dst.mkdir()
    with pytest.raises(OutputError, match=r"directory|only regular files"):
        check_output(dst, overwrite=True)
    if make != "dir":
        tmp = tmp_path / "tmp"
        tmp.write_text("x")
        with pytest.raises(OutputError, match="only regular files"):
            commit(tmp, dst, overwrite=True)


def test_extension_checked(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"\.jpg is not a format.*\.tif"):
        check_output(tmp_path / "out.jpg", overwrite=False, extensions=(".tif", ".tiff"))
    assert check_output(tmp_path / "out.TIF", overwrite=False, extensions=(".tif",))


def test_identity_catches_dotdot_symlink_and_hardlink(tmp_path: Path) -> None:
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"data")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.tif"
    link.symlink_to(scene)
    hard = tmp_path / "hard.tif"
    os.link(scene, hard)
    for dst in (tmp_path / "sub" / ".." / "scene.tif", link, hard):
        with pytest.raises(OutputError, match="same file as the input scene"):
            check_distinct([("-o", dst)], [("scene", scene)])
    with pytest.raises(OutputError, match=r"-o .* and --preview .* are the same file"):
        check_distinct([("-o", tmp_path / "a.tif"), ("--preview", tmp_path / "sub/../a.tif")])
    check_distinct([("-o", tmp_path / "a.tif"), ("--csv", None)],
                   [("scene", scene), ("remote", "/vsicurl/https://x/a.tif")])


def test_commit_rechecks_existence(tmp_path: Path) -> None:
    dst = tmp_path / "out.json"
    def race() -> None:
        with atomic_path(dst, overwrite=False) as tmp:
            tmp.write_text("mine")
            dst.write_text("theirs")  # another program created it meanwhile

    with pytest.raises(OutputExistsError, match="appeared"):
        race()
    assert dst.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_sweep_removes_stale_temporaries_only(tmp_path: Path) -> None:
    dst = tmp_path / "out.tif"
    stale = [".out.tif.0a1b2c3d.partial.tif", ".out.tif.0a1b2c3d.partial.tif.ovr.tmp",
             ".out.tif.tag.12345678.partial.tif", ".out.tif.partial.tif"]
    keep = [".out.tif.lock", "out.tif", ".other.tif.0a1b2c3d.partial.tif",
            ".out.tif.ffffffff.partial.tif"]
    for name in stale + keep:
        (tmp_path / name).write_text("x")
    (tmp_path / ".out.tif.0a1b2c3d.partial.tails").mkdir()
    sweep_stale(dst, keep=[tmp_path / ".out.tif.ffffffff.partial.tif"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_outputs_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors", overwrite=False) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # like mkstemp
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


FULL = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from geoseg._atomic import atomic_path
    from geoseg.errors import GeosegError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        with atomic_path(Path(sys.argv[1]), overwrite=False) as tmp:
            tmp.write_bytes(b"x" * (4 << 20))
    except GeosegError as exc:
        print(type(exc).__name__, exc)
""")


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    dst = tmp_path / "big.bin"
    out = subprocess.run([sys.executable, "-c", FULL, str(dst)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(DiskFullError.__name__), out.stdout
    assert "no space left" in out.stdout and str(dst) in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_lock_file_survives_no_race(tmp_path: Path) -> None:
    """Many short lock/unlock cycles from two processes never both hold the lock."""
    dst = tmp_path / "out.tif"
    log = tmp_path / "log"
    script = textwrap.dedent("""
        import os, sys, time
        from geoseg._atomic import destination_locks
        from geoseg.errors import OutputLockedError
        got = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                with destination_locks(sys.argv[1]):
                    with open(sys.argv[2], "a") as f:
                        f.write(f"+{os.getpid()}\\n")
                    time.sleep(0.001)
                    with open(sys.argv[2], "a") as f:
                        f.write(f"-{os.getpid()}\\n")
                    got += 1
            except OutputLockedError:
                pass
        print(got)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(dst), str(log)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(c > 0 for c in counts)
    lines = log.read_text().split()
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # never interleaved
        assert enter[0] == "+" and leave == "-" + enter[1:]

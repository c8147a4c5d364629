"""Outputs nobody can corrupt: checks, locks, atomic renames and write-error messages.

Every command goes through this module for its destinations (DESIGN.md, "One writer per
destination" and "Outputs are atomic"):

- :func:`check_output`: before any compute, a destination may exist only with
  ``overwrite`` and only as a regular file (never a device, fifo, socket or directory),
  its directory must be writable, and its extension must name a format we write;
- :func:`check_distinct`: no destination is the same file as an input or as another
  destination, by resolved identity (``realpath`` and, for existing files, inode), so
  ``sub/../scene.tif``, symlinks and hard links are caught;
- :func:`destination_locks`: an exclusive ``fcntl.flock`` per destination on a lock file
  beside it (``.NAME.lock``, holding the PID), so a second run to the same destination
  fails at once with the first one's PID;
- :func:`atomic_path` / :func:`commit`: write to a per-run unique temporary name and
  rename it onto the destination only on success, re-checking "exists without
  overwrite" at commit time;
- :func:`write_errors`: full disks and other write failures become one
  :class:`OutputError` line naming the destination and the free space.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from geoseg.errors import (
    DiskFullError,
    GeosegError,
    OutputError,
    OutputExistsError,
    OutputLockedError,
)

__all__ = [
    "atomic_path",
    "check_distinct",
    "check_extension",
    "check_free_space",
    "check_output",
    "commit",
    "destination_locks",
    "partial_path",
    "sweep_stale",
    "waiting_lock",
    "write_errors",
]

PathLike = str | os.PathLike[str]

#: Errno values that mean "the disk (or the quota, or the file size limit) is full".
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("no space left", "disk quota", "file too large", "not enough space")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_special(path: Path) -> None:
    """Raise unless ``path`` is absent, a regular file, or a symlink to one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # absent, or a dangling symlink (the link itself is replaced)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path} is {_kind(mode)}; only regular files are ever "
                          "replaced, choose another output")


def check_extension(dst: PathLike, allowed: Sequence[str], what: str = "output") -> None:
    """Raise :class:`OutputError` unless ``dst`` ends with one of ``allowed`` (``.tif``)."""
    suffix = Path(dst).suffix.lower()
    if suffix not in [a.lower() for a in allowed]:
        raise OutputError(f"cannot write {what} {dst}: {suffix or 'no extension'} is not a "
                          f"format written here; use {', '.join(allowed)}")


def check_output(dst: PathLike, *, overwrite: bool, extensions: Sequence[str] = (),
                 what: str = "output") -> Path:
    """Fail fast, before any compute, when ``dst`` cannot be (over)written.

    Parameters
    ----------
    dst : path
        The destination file.
    overwrite : bool
        Whether an existing ``dst`` may be replaced (regular files only).
    extensions : sequence of str, optional
        Allowed extensions (``.tif``); any when empty.
    what : str
        What the output is, for messages.

    Returns
    -------
    Path
        ``dst`` as an absolute path.

    Raises
    ------
    OutputExistsError
        ``dst`` exists and ``overwrite`` is false.
    OutputError
        The parent directory does not exist or is not writable, ``dst`` is a directory or
        another special file, or its extension is not one of ``extensions``.
    """
    path = Path(dst).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name for the output")
    if extensions:
        check_extension(path, extensions, what)
    if os.path.lexists(path):
        if not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        _refuse_special(path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not _writable(parent):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")
    return path


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory``, tried for real.

    Permission bits alone say yes to root everywhere, also on ``/proc`` and read-only
    mounts; a tiny probe file is created and removed instead.
    """
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".geoseg-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _identity(path: PathLike) -> tuple[str, tuple[int, int] | None]:
    """``(realpath, (device, inode) or None when absent)`` of a local path."""
    real = os.path.realpath(os.path.expanduser(os.fspath(path)))
    try:
        st = os.stat(real)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]
          ) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def check_distinct(outputs: Iterable[tuple[str, PathLike | None]],
                   inputs: Iterable[tuple[str, PathLike | None]] = ()) -> None:
    """Refuse a destination that is an input or another destination, by resolved identity.

    Parameters
    ----------
    outputs, inputs : iterable of (label, path)
        ``label`` names the option in messages (``-o``, ``--preview``, ``scene``); ``None``
        paths and GDAL virtual paths (``/vsi...``, URLs) are skipped.

    Raises
    ------
    OutputError
        Two outputs, or an output and an input, are the same file.
    """
    from geoseg.io import is_remote

    def local(items: Iterable[tuple[str, PathLike | None]]) -> list[tuple[str, str, tuple[
            str, tuple[int, int] | None]]]:
        return [(label, os.fspath(p), _identity(p)) for label, p in items
                if p is not None and not is_remote(os.fspath(p))]

    outs, ins = local(outputs), local(inputs)
    for i, (label, text, ident) in enumerate(outs):
        for in_label, in_text, in_ident in ins:
            if _same(ident, in_ident):
                raise OutputError(f"{label} {text} is the same file as the input {in_label} "
                                  f"{in_text}; it would be destroyed, choose another output")
        for other_label, other_text, other_ident in outs[i + 1:]:
            if _same(ident, other_ident):
                raise OutputError(f"{label} {text} and {other_label} {other_text} are the "
                                  "same file; give each output its own name")


# ----------------------------------------------------------------------------- locks

_held: dict[str, list[int]] = {}  # lock path -> [fd, depth] for locks this process holds
_held_guard = threading.Lock()


def lock_file(dst: PathLike) -> Path:
    """Return the lock file of a destination: ``.NAME.lock`` beside its resolved path."""
    real = Path(os.path.realpath(os.path.expanduser(os.fspath(dst))))
    return real.with_name(f".{real.name}.lock")


def _other_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _acquire(lock: Path, dst: PathLike, *, wait: bool = False) -> int:
    """Take an exclusive flock on ``lock`` (non-blocking unless ``wait``); return its fd."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {dst}: {exc.strerror} ({lock})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = _other_pid(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{dst} is being written by another geoseg run (PID {pid}); wait for it to "
                "finish or choose another output") from None
        # The holder before us unlinks the file before unlocking it: if the name now
        # points elsewhere (or nowhere), we locked a dead inode and must try again.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            with suppress(OSError):  # the PID only informs; a full disk must not stop us
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


@contextmanager
def _lock_one(dst: PathLike) -> Iterator[None]:
    lock = lock_file(dst)
    key = str(lock)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:  # re-entrant within one process (predict -> vectorize)
            entry[1] += 1
        else:
            _held[key] = [_acquire(lock, dst), 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                lock.unlink(missing_ok=True)  # before unlocking: see _acquire
                os.close(entry[0])


@contextmanager
def waiting_lock(lock: Path) -> Iterator[None]:
    """Wait for an exclusive flock on the file ``lock`` and remove the file afterwards.

    For caches that several runs fill (the engine cache): a second caller waits instead
    of failing. Not re-entrant: each call takes its own descriptor, so threads of one
    process wait for each other too. The file is unlinked before it is unlocked, and a
    waiter that then holds a dead inode tries again (:func:`_acquire`), so no lock file
    is left behind and no two callers ever hold the lock at once.
    """
    fd = _acquire(lock, lock, wait=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def destination_locks(*destinations: PathLike | None) -> Iterator[None]:
    """Hold an exclusive lock on each destination (``None`` skipped) for the block.

    Raises
    ------
    OutputLockedError
        Another process holds one of them; the message names its PID.
    """
    paths = sorted({str(lock_file(d)): d for d in destinations if d is not None}.items())
    with ExitStack() as stack:
        for _, dst in paths:
            stack.enter_context(_lock_one(dst))
        yield


# ---------------------------------------------------------------- temporaries, commit

def partial_path(dst: Path, tag: str = "") -> Path:
    """Return a hidden temporary name, unique to this call, beside ``dst``."""
    suffix = f".{tag}" if tag else ""
    return dst.with_name(f".{dst.name}{suffix}.{uuid.uuid4().hex[:8]}.partial{dst.suffix}")


def sweep_stale(dst: Path, keep: Iterable[Path] = ()) -> list[Path]:
    """Remove temporaries earlier runs left beside ``dst`` (call with its lock held).

    Matches ``.NAME[.tag][.XXXXXXXX].partial*`` files and folders (the token-less form is
    what runs left before temporaries had per-run names) and GDAL's sidecars of them
    (``.ovr.tmp``, ``.aux.xml``), except those in ``keep`` and names that start with theirs.
    """
    pattern = re.compile(rf"^\.{re.escape(dst.name)}(\.[\w-]+)?(\.[0-9a-f]{{8}})?\.partial")
    kept = {str(p) for p in keep}
    removed = []
    try:
        entries = list(os.scandir(dst.parent))
    except OSError:
        return []
    for entry in entries:
        if not pattern.match(entry.name) or any(entry.path.startswith(k) for k in kept):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


def commit(tmp: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``dst``, re-checking at this moment what :func:`check_output` did.

    Raises
    ------
    OutputExistsError
        ``dst`` appeared meanwhile and ``overwrite`` is false.
    OutputError
        ``dst`` became a special file meanwhile.
    """
    if os.path.lexists(dst):
        if not overwrite:
            raise OutputExistsError(f"{dst} appeared while this run worked; pass --overwrite "
                                    "to replace it")
        _refuse_special(dst)
    os.replace(tmp, dst)


def _umask() -> int:
    """Return the umask of this process, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def _publish_mode(tmp: Path) -> None:
    """Give a finished file the mode of any new file (0644 under umask 022).

    Some writers create their files private (0600, as ``mkstemp`` does); outputs are read
    by other accounts (cluster workers), like every file the user creates.
    """
    if tmp.is_file():
        os.chmod(tmp, 0o666 & ~_umask())


@contextmanager
def atomic_path(dst: PathLike, *, overwrite: bool,
                extensions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it onto ``dst`` only on success.

    A crash or exception never leaves a half-written file at ``dst`` and never touches an
    existing ``dst``. Sidecar files GDAL may write next to the temporary (``.aux.xml``,
    ``.ovr``) are removed too. ``dst`` is locked meanwhile, and a full disk becomes one
    :class:`OutputError` line.
    """
    path = check_output(dst, overwrite=overwrite, extensions=extensions)
    tmp = partial_path(path)
    try:
        with destination_locks(path), write_errors(path):
            yield tmp
            _publish_mode(tmp)
            commit(tmp, path, overwrite=overwrite)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml"),
                         tmp.with_name(tmp.name + ".ovr")):
            leftover.unlink(missing_ok=True)


# --------------------------------------------------------------------- write failures

def free_mb(path: Path) -> int:
    """Free megabytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free // 2**20)
    except OSError:
        return -1


def _is_full(exc: BaseException, dst: Path) -> bool:
    """Whether a write failure is a full disk, a full quota or the file size limit.

    GDAL reports a failed write as "Write failed" (libtiff prints the OS reason itself
    and the errno is lost), so such an error counts as full when the file system has
    under 16 MB left or a file size limit (``RLIMIT_FSIZE``) is set.
    """
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        if any(t in str(e).lower() for t in _FULL_TEXT):
            return True
    if not any("write" in str(e).lower() for e in chain):
        return False
    import resource

    limited = resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY
    return limited or 0 <= free_mb(dst) < 16


def full_disk_error(dst: Path) -> DiskFullError:
    """Return the one-line error for a full disk while writing ``dst``."""
    return DiskFullError(f"no space left on the device while writing {dst}; "
                       f"{free_mb(dst)} MB free (or a file size limit was reached)")


@contextmanager
def write_errors(dst: Path) -> Iterator[None]:
    """Turn a full disk or another OS/GDAL write failure into one :class:`OutputError`.

    Errors geoseg raises on purpose (:class:`GeosegError`, e.g. an unreadable input) pass
    through unchanged.
    """
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    try:
        yield
    except GeosegError:
        raise
    # GDAL errors raised straight from rasterio's C layer (CPLE_AppDefinedError: "TIFF
    # WriteDirectoryTagData: IO error" when the disk fills during a COG copy) are
    # neither OSError nor RasterioError.
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        if _is_full(exc, dst):
            raise full_disk_error(dst) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"cannot write {dst}: {first}") from None


def check_free_space(dst: Path, need_bytes: int) -> None:
    """Refuse before compute when ``dst``'s file system lacks ``need_bytes``."""
    free = free_mb(dst)
    need = -(-int(need_bytes) // 2**20)
    if 0 <= free < need:
        raise OutputError(f"not enough space to write {dst}: about {need} MB needed, "
                          f"{free} MB free")

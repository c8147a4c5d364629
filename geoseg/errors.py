"""Exceptions geoseg raises on purpose.

Every error meant for a user derives from :class:`GeosegError` and carries a one-line,
actionable message: what was wrong, the value seen, what was expected and how to fix it.
The CLI turns these into a single line on stderr and a non-zero exit; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BandMismatchError",
    "BundleError",
    "DiskFullError",
    "GeosegError",
    "GeosegWarning",
    "InputError",
    "NoOverlapError",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "RegistryError",
    "UnknownNameError",
    "WeightsNotFoundError",
]


class GeosegError(Exception):
    """Root of every error geoseg raises on purpose."""


class InputError(GeosegError, ValueError):
    """Bad user input: not a raster, no CRS, wrong band count, bad option value."""


class BandMismatchError(InputError):
    """The scene's bands do not match what the model expects."""


class NoOverlapError(InputError):
    """Two inputs (prediction and labels, scene and region) do not overlap."""


class UnknownNameError(GeosegError, KeyError):
    """A name (architecture, backbone, model, class) that is not known."""

    def __str__(self) -> str:
        # A plain KeyError would show its message in quotes.
        return str(self.args[0]) if self.args else ""


class RegistryError(GeosegError):
    """A registry was misused, e.g. the same name registered twice."""


class WeightsNotFoundError(GeosegError, FileNotFoundError):
    """Pretrained weights were asked for but the file is not on disk."""


class BundleError(GeosegError):
    """A model bundle is corrupt, of an unknown format version or inconsistent."""


class OutputError(GeosegError, OSError):
    """An output cannot be written (unwritable directory, bad extension ...)."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and overwriting was not asked for."""


class DiskFullError(OutputError):
    """The disk (or quota, or file size limit) filled up while an output was written."""


class OutputLockedError(OutputError):
    """Another run is writing the same destination (it holds the destination's lock)."""


class GeosegWarning(UserWarning):
    """Something was deliberately skipped or degraded; the result is still valid."""

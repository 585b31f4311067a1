"""Where a store lives: a local path, a URL of another filesystem (s3://, gs://, ...), or a zarr
store object (zarr.storage.MemoryStore in tests). The one place that tells them apart."""

from __future__ import annotations

import os
from pathlib import Path


def is_path(where) -> bool:
    """A local filesystem location: a str/PathLike without a scheme, or file://."""
    return isinstance(where, (str, os.PathLike)) and not is_remote(where)


def is_remote(where) -> bool:
    """A URL of a non-local filesystem (anything with "://" except file://)."""
    return isinstance(where, (str, os.PathLike)) and "://" in os.fspath(where) and not os.fspath(where).startswith("file://")


def local_path(where) -> Path:
    """The Path of a local location (file:// stripped)."""
    text = os.fspath(where)
    return Path(text[len("file://"):] if text.startswith("file://") else text)

"""Reading files that someone else may have placed: a tenant's volume, a bucket's objects, a
shared cache entry.

A name is only a name: a link on the volume may point anywhere the pod can read (its
environment in ``/proc/self/environ``, a file of the image, another tenant's engine), and a
FIFO or a device never ends. So a file is opened first and checked as opened, through
``/proc/self/fd``: a regular file inside the directory it must come from, whatever the link
pointed to when the name was checked. JSON is read with a bound on its bytes and parsed with
its nesting caught.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BadSpec

__all__ = ["open_regular", "open_inside", "read_inside", "load_json", "MAX_JSON_BYTES"]

# A config.json, an index, a manifest or a tokenizer_config.json is KiB to a few MiB.
MAX_JSON_BYTES = 16 * 2**20


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (a FIFO would block the read for
    ever, a device never end); OSError otherwise."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise IsADirectoryError(f"{path} is not a regular file")
    return os.fdopen(descriptor, "rb")


def open_inside(path: Path, base: Path, what: str) -> BinaryIO:
    """``path`` opened for reading, or BadSpec when what it opens is not a regular file inside
    ``base`` (links are followed by the open, then the file opened is checked)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise BadSpec(f"{what}: cannot open {_quoted(path)}: {error.strerror}") from None
    handle = os.fdopen(descriptor, "rb")
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        if not opened.is_relative_to(base.resolve()):
            raise BadSpec(f"{what}: {_quoted(path)} resolves outside {_quoted(base)}; refusing to use it "
                          "(remove or rename it in the source)")
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise BadSpec(f"{what}: {_quoted(path)} is not a regular file; refusing to read it")
    except BaseException:
        handle.close()
        raise
    return handle


def read_inside(path: Path, base: Path, what: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """At most ``limit`` bytes of :func:`open_inside`; BadSpec past them."""
    with open_inside(path, base, what) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadSpec(f"{what}: {_quoted(path)} is larger than {limit} bytes")
    return data


def load_json(data: bytes | str, what: str) -> Any:
    """``data`` parsed, or BadSpec naming ``what`` (not JSON, not UTF-8, nested past Python's
    recursion limit)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise BadSpec(f"{what}: nested too deep to be read") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadSpec(f"{what}: not valid JSON ({' '.join(str(error).split())[:120]})") from None


def _quoted(path: Path | str, limit: int = 120) -> str:
    text = repr(str(path))
    return text if len(text) <= limit else text[:limit // 2] + "..." + text[-limit // 2:]

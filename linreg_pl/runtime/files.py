"""Files that are either complete or absent: every file a run writes goes through here.

A writer fills a temporary file beside its target and renames it into place, so a process that
dies mid-write leaves the previous file (or none), never a truncated one. No fsync: atomic against
a dying process, not against a power cut, which would cost milliseconds per checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing; it appears, complete, only when the block succeeds.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_open(target) as file:
    ...     _ = file.write(b"done")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('done', ['out.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as file:
            yield file
        os.replace(partial, path)  # atomic within one filesystem
    finally:
        partial.unlink(missing_ok=True)


def visible_name(path: str | os.PathLike) -> str:
    """The file a user asked for: the target of ``atomic_open``'s temporary file, else ``path``.

    >>> visible_name("out/.pred.csv.123.partial"), visible_name("out/pred.csv")
    ('out/pred.csv', 'out/pred.csv')
    """
    path = Path(path)
    name, _, _ = path.name.removeprefix(".").removesuffix(PARTIAL_SUFFIX).rpartition(".")
    return str(path.with_name(name)) if path.name.endswith(PARTIAL_SUFFIX) and name else str(path)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step."""
    with atomic_open(path) as file:
        file.write(text.encode("utf-8"))

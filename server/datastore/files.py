"""Atomic file placement: a temporary file in the target folder, then a rename, tied to a transaction."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temp_path(folder: Path, ext: str) -> Path:
    """A hidden temporary name in ``folder`` that keeps ``ext`` (readers pick the format by it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".tmp-{uuid.uuid4().hex}{ext}"


def write_stream(stream: IO[bytes], dest: Path, chunk: int = 1 << 20) -> int:
    """Copy a request stream to ``dest`` and fsync it; returns the byte count."""
    size = 0
    with open(dest, "wb") as out:
        while True:
            block = stream.read(chunk)
            if not block:
                break
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return size


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file of this process and a rename: a reader sees the
    old file or the new one, never half of one, even with several processes writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    tmp.write_text(text)
    tmp.replace(path)


def copy_file(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def placed(tmp: Path, final: Path, replaces: Path | None = None) -> Iterator[None]:
    """Move ``tmp`` to ``final`` for the duration of the block; undo it if the block raises.

    Use it around the database unit of work that records the file, so that a failed commit
    leaves neither the new file nor a changed row, and the previous file (``final`` itself or
    ``replaces``, an old file of the same id with another extension) comes back untouched.
    """
    olds = [p for p in {final, replaces} if p is not None and p.exists()]
    backups = {p: p.with_name(f".bak-{uuid.uuid4().hex}-{p.name}") for p in olds}
    for old, bak in backups.items():
        os.replace(old, bak)
    try:
        os.replace(tmp, final)
        yield
    except BaseException:
        final.unlink(missing_ok=True)  # the new file (any old one was moved aside first)
        tmp.unlink(missing_ok=True)
        for old, bak in backups.items():
            os.replace(bak, old)
        raise
    for bak in backups.values():
        bak.unlink(missing_ok=True)


@contextmanager
def removed(path: Path) -> Iterator[None]:
    """Hide ``path`` for the block (renamed aside); delete it for good only if the block succeeds."""
    if not path.exists():
        yield
        return
    bak = path.with_name(f".del-{uuid.uuid4().hex}-{path.name}")
    os.replace(path, bak)
    try:
        yield
    except BaseException:
        os.replace(bak, path)
        raise
    bak.unlink(missing_ok=True)


def cleanup_temp(folder: Path) -> int:
    """Remove temporaries and backups a crash left behind (called at start); restore lost originals."""
    n = 0
    if not folder.is_dir():
        return 0
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(".tmp-"):
            os.unlink(entry.path)
            n += 1
        elif name.startswith((".bak-", ".del-")) and entry.is_file():
            original = Path(folder) / name.split("-", 2)[2]
            if original.exists():
                os.unlink(entry.path)
            else:
                os.replace(entry.path, original)
            n += 1
    return n

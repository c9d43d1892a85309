"""Output files of every command: checked before the work, written all-or-nothing.

``prepare_output`` runs when a command starts: it refuses an output that is, contains or lies
inside an input, creates the folder, and proves the folder writable, so a whole scoring pass
is never lost to a missing or read-only folder at the end. ``atomic_write`` writes beside the
target and renames into place, so an interrupted command leaves the old file (or none), never
half of one. Paths go through etils.epath, which also understands ``gs://`` (atlas_jax/paths.py):
GCS has no atomic rename, so there the file is written to a local temporary file and uploaded to
its final name in one upload when complete; a GCS object appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import IO, Iterable, Iterator

from etils import epath

from atlas_jax import paths

PathLike = str | os.PathLike


def _resolved(path: PathLike) -> epath.Path:
    p = epath.Path(path)
    # local paths: follow symlinks so `run` and `./run/../run` compare equal; remote ones as written
    return epath.Path(os.path.realpath(p)) if "://" not in os.fspath(path) else p


def check_not_input(target: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside an input: replacing it would destroy
    the input (``export --checkpoint RUN/checkpoints --out RUN --overwrite``)."""
    out = _resolved(target)
    for source in inputs:
        if source is None:
            continue
        src = _resolved(source)
        if out == src or out in src.parents or src in out.parents:
            relation = "is" if out == src else ("contains" if out in src.parents else "lies inside")
            raise FileExistsError(f"{target}: the output {relation} the input {source}; "
                                  "choose an output outside every input")


def prepare_output(path: PathLike, inputs: Iterable[PathLike | None] = ()) -> epath.Path:
    """Check an output file before any work: not an input, folder created and writable."""
    check_not_input(path, inputs)
    target = epath.Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{target.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OSError(f"{path}: cannot write into {folder} ({e.strerror or e})") from None
    return target


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", keep_partial: PathLike | None = None) -> Iterator[IO]:
    """``with atomic_write(p) as f: f.write(...)``: the file appears whole at the end, or not at all.
    ``keep_partial``: where what was written so far goes when the block fails (finished work that
    is worth keeping, e.g. the expert episodes before a Ctrl-C); the target is never touched."""
    target = epath.Path(path)
    if paths.is_remote(path):
        yield from _remote_atomic_write(target, mode, keep_partial)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        with temp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        temp.replace(target)  # same folder: a rename (atomic on local and POSIX filesystems)
    except BaseException as e:
        with contextlib.suppress(OSError):
            if keep_partial is not None:
                temp.replace(epath.Path(keep_partial))
            else:
                temp.unlink()
        if isinstance(e, OSError) and e.filename is None and e.errno:  # a full disk names no file: name it
            raise OSError(e.errno, e.strerror, os.fspath(path)) from e
        raise


def _remote_atomic_write(target: epath.Path, mode: str, keep_partial: PathLike | None) -> Iterator[IO]:
    """No atomic rename on GCS: write a local temporary file, then upload it to the final name."""
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.tmp-")
    os.close(fd)
    try:
        with open(temp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        paths.upload(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            if keep_partial is not None:
                paths.upload(temp, keep_partial)
        raise
    finally:
        os.unlink(temp)

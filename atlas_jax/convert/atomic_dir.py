"""Write a directory all-or-nothing: build it under a temporary name beside the target and
rename it into place only when everything succeeded, so a failed import or export never
leaves a partial directory that looks valid.

A storage URL (``gs://``) has no atomic rename: the directory is built in a local temporary
folder and its files are uploaded when it is complete, the files that make it valid
(``config.json`` of a Hugging Face directory, ``model_config.json`` of a checkpoint) last, so
an interrupted upload leaves a folder that is not taken for a model."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from etils import epath

from atlas_jax import paths
from atlas_jax.outputs import check_not_input

VALIDITY_MARKERS = ("model_config.json", "config.json")  # uploaded last


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """``inputs``: paths this command reads; the target may be none of them, nor hold or sit in one.
    Yields the local folder to fill."""
    check_not_input(target, inputs)
    target = paths.absolute(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{target}: already exists and is not empty (pass --overwrite to replace it)")
    if paths.is_remote(target):
        yield from _remote(target)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(target.parent / f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.replace(temp, target)


def _remote(target: epath.Path) -> Iterator[Path]:
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-"))
    try:
        yield temp
        if target.exists():
            target.rmtree() if target.is_dir() else target.unlink()
        files = sorted((p for p in temp.rglob("*") if p.is_file()),
                       key=lambda p: (p.relative_to(temp).as_posix() in VALIDITY_MARKERS, p.as_posix()))
        for local in files:
            paths.upload(local, target / local.relative_to(temp).as_posix())
    finally:
        shutil.rmtree(temp, ignore_errors=True)

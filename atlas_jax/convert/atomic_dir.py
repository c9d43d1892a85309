"""Write a directory all-or-nothing: build it under a temporary name beside the target and
rename it into place only when everything succeeded, so a failed import or export never
leaves a partial directory that looks valid."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from atlas_jax.outputs import check_not_input


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False,
               inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """``inputs``: paths this command reads; the target may be none of them, nor hold or sit in one."""
    check_not_input(target, inputs)
    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{target}: already exists and is not empty (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.partial-{os.getpid()}"
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

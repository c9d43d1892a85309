"""One path type for every user path: local paths and storage URLs (``gs://``, ``s3://``) alike.

Every path a command reads or writes goes through ``etils.epath.Path`` (pathlib's interface over
the local disk and, through fsspec/gcsfs, over GCS), the type Orbax and TFDS use as well. Three
things a URL cannot do the local way, handled here once:

- ``Path.absolute()`` turns ``gs://b/x`` into ``./gs:/b/x``: use ``absolute`` below.
- Libraries that only open local folders (transformers tokenizers, TensorBoard writers): ``local_copy``
  downloads a remote input folder once per process; ``StagedDir`` gives a local folder whose files
  are uploaded to the remote one.
- GCS has no atomic rename (a rename is a copy then a delete) and no append: ``upload`` writes a
  finished local file in one upload, and a GCS object appears whole when its upload completes or
  not at all; ``StagedDir`` rewrites a grown file whole.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from typing import Iterable

from etils import epath

PathLike = str | os.PathLike
Path = epath.Path


def is_remote(path: PathLike) -> bool:
    """A storage URL (``gs://``, ``s3://`` ...), not a local path."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def absolute(path: PathLike) -> epath.Path:
    """The absolute path of a local path; a URL unchanged (epath's ``absolute`` would make it local)."""
    return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))


def join(*parts: PathLike) -> str:
    """``os.path.join`` for local paths and URLs alike."""
    return os.fspath(epath.Path(parts[0]).joinpath(*parts[1:]))


def describe(path: PathLike) -> str:
    """A path as it goes into output metadata: absolute when local, the URL when remote."""
    return os.fspath(absolute(path))


def upload(local_file: PathLike, target: PathLike) -> None:
    """Copy a finished local file to ``target`` in one upload. On GCS the object appears only when
    the upload completes; a failed upload is discarded, so the old object (or none) stays."""
    with open(local_file, "rb") as src:
        dst = epath.Path(target).open("wb")
        try:
            shutil.copyfileobj(src, dst, length=8 << 20)
        except BaseException:
            # fsspec files finalize on close: cancel instead, never publishing a partial object
            discard = getattr(dst, "discard", None)
            if discard is not None:
                discard()
            else:
                dst.close()
            raise
        dst.close()


def _download(src: epath.Path, dst: str) -> None:
    if src.is_dir():
        os.makedirs(dst, exist_ok=True)
        for child in src.iterdir():
            _download(child, os.path.join(dst, child.name))
    else:
        with src.open("rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=8 << 20)


_TEMP_ROOTS: list[str] = []
_LOCAL_COPIES: dict[str, str] = {}


def _temp_dir(prefix: str) -> str:
    if not _TEMP_ROOTS:
        _TEMP_ROOTS.append(tempfile.mkdtemp(prefix="atlas-jax-remote-"))
        atexit.register(shutil.rmtree, _TEMP_ROOTS[0], True)
    return tempfile.mkdtemp(prefix=prefix, dir=_TEMP_ROOTS[0])


def local_copy(path: PathLike) -> str:
    """A local path with the content of ``path`` (file or folder), for libraries that read only
    local files: the path itself when local, else a copy downloaded once per process (removed
    at exit)."""
    text = os.fspath(path)
    if not is_remote(text):
        return text
    if text not in _LOCAL_COPIES:
        src = epath.Path(text)
        if not src.exists():
            raise FileNotFoundError(f"{text}: no such file or folder")
        dst = os.path.join(_temp_dir("copy-"), src.name or "root")
        _download(src, dst)
        _LOCAL_COPIES[text] = dst
    return _LOCAL_COPIES[text]


class StagedDir:
    """A local folder standing in for the output folder ``target``: the folder itself when local;
    for a URL, a temporary folder whose new or changed files ``sync`` uploads (each whole, in one
    upload). ``fetch``: files to download first, so that appending to them continues the remote
    file (a resumed run's metrics.jsonl)."""

    def __init__(self, target: PathLike, fetch: Iterable[str] = ()):
        self.target = epath.Path(target)
        self.remote = is_remote(target)
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._last_sync = time.monotonic()
        if not self.remote:
            self.local = os.fspath(target)
            os.makedirs(self.local, exist_ok=True)
            return
        self.local = _temp_dir("staged-")
        for name in fetch:
            source = self.target / name
            if source.exists():
                os.makedirs(os.path.dirname(os.path.join(self.local, name)), exist_ok=True)
                _download(source, os.path.join(self.local, name))
                st = os.stat(os.path.join(self.local, name))
                self._uploaded[name] = (st.st_size, st.st_mtime_ns)

    def sync(self, min_interval_s: float = 0.0) -> None:
        """Upload what changed since the last sync (nothing for a local target); with
        ``min_interval_s``, only if that long has passed since the last sync."""
        if not self.remote or time.monotonic() - self._last_sync < min_interval_s:
            return
        for root, _, files in os.walk(self.local):
            for name in files:
                local = os.path.join(root, name)
                rel = os.path.relpath(local, self.local)
                st = os.stat(local)
                if self._uploaded.get(rel) != (st.st_size, st.st_mtime_ns):
                    upload(local, self.target / rel)
                    self._uploaded[rel] = (st.st_size, st.st_mtime_ns)
        self._last_sync = time.monotonic()

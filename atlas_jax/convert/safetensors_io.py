"""Reading and writing safetensors with numpy only (no torch), including bfloat16.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
dtype / shape / byte offsets, then the raw little-endian data. Reading validates every
header against the file size first, so a truncated download fails with the file's name
before any tensor is used. Local files only (tensors are memory-mapped): a gs:// model is
downloaded first (``paths.local_copy`` in load_hf) and exports are written into atomic_dir's
local folder, then uploaded.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Iterable

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class SafetensorsError(ValueError):
    pass


def read_header(path: Path) -> tuple[dict, int]:
    """(tensor entries, byte offset of the data section), validated against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise SafetensorsError(f"{path}: truncated safetensors file (header of {header_len} bytes, "
                                   f"file of {size} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    for name, entry in header.items():
        dtype = entry.get("dtype")
        if dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        begin, end = entry["data_offsets"]
        expected = math.prod(entry["shape"]) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise SafetensorsError(f"{path}: tensor {name!r} spans {end - begin} bytes, its shape "
                                   f"{entry['shape']} needs {expected}")
        if data_start + end > size:
            raise SafetensorsError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte "
                                   f"{data_start + end}, the file has {size}")
    return header, data_start


class SafetensorsReader:
    """All tensors of a Hugging Face model directory: ``model.safetensors`` or the shards listed
    in ``model.safetensors.index.json``. Tensors are memory-mapped, read on demand."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        index_path = self.model_dir / INDEX_FILE
        single = self.model_dir / SINGLE_FILE
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise SafetensorsError(f"{index_path}: not a valid safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        elif single.is_file():
            files, weight_map = [SINGLE_FILE], None
        else:
            others = sorted(p.name for p in self.model_dir.glob("*.bin")) if self.model_dir.is_dir() else []
            hint = f" (found {', '.join(others)}: only safetensors weights are supported)" if others else ""
            raise FileNotFoundError(f"{self.model_dir}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self._entries: dict[str, tuple[Path, dict, int]] = {}
        for file_name in files:
            path = self.model_dir / file_name
            if not path.is_file():
                raise FileNotFoundError(f"{index_path}: lists shard {file_name}, which is missing")
            header, data_start = read_header(path)
            for name, entry in header.items():
                self._entries[name] = (path, entry, data_start)
        if weight_map is not None:
            for name, file_name in weight_map.items():
                if name not in self._entries or self._entries[name][0].name != file_name:
                    raise SafetensorsError(f"{index_path}: tensor {name!r} is listed in {file_name} "
                                           f"but that shard does not contain it")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> np.ndarray:
        path, entry, data_start = self._entry(name)
        begin, _ = entry["data_offsets"]
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=data_start + begin, shape=shape)

    def _entry(self, name: str):
        if name not in self._entries:
            raise KeyError(f"{self.model_dir}: tensor {name!r} is missing from the safetensors files")
        return self._entries[name]


def write_file(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, array in tensors.items():
        nbytes = array.size * array.dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def write_sharded(out_dir: str | Path, tensors: Iterable[tuple[str, np.ndarray]],
                  max_shard_bytes: int = 5 * 2**30) -> list[str]:
    """Write ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``.

    Tensors are grouped in order into shards of at most ``max_shard_bytes`` (a single larger
    tensor gets a shard of its own). Only one shard is held in memory at a time: shards are
    written under temporary names and renamed once their count is known. Returns the names.
    """
    out_dir = Path(out_dir)
    temp_names: list[str] = []
    weight_map: dict[str, int] = {}
    current: dict[str, np.ndarray] = {}
    current_bytes = total = 0

    def flush():
        temp_names.append(f".shard-{len(temp_names):05d}.tmp")
        write_file(out_dir / temp_names[-1], current)
        current.clear()

    for name, array in tensors:
        array = np.asarray(array)
        nbytes = array.size * array.dtype.itemsize
        if current and current_bytes + nbytes > max_shard_bytes:
            flush()
            current_bytes = 0
        current[name] = array
        weight_map[name] = len(temp_names)
        current_bytes += nbytes
        total += nbytes
    flush()
    n = len(temp_names)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for temp, final in zip(temp_names, names):
        os.replace(out_dir / temp, out_dir / final)
    index = {"metadata": {"total_size": total},
             "weight_map": {name: names[i] for name, i in sorted(weight_map.items())}}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return names

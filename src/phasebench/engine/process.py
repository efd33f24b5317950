"""Start a Python-packaged engine (vLLM, SGLang) on 127.0.0.1, wait for health with progress, stop it on
every exit path.

The engine runs in its own process group (vLLM starts an engine-core child process), which ``stop`` ends
as a whole: SIGTERM, then SIGKILL after a grace period. The direct child also gets SIGTERM if phasebench
dies (``PR_SET_PDEATHSIG``). ``ManagedEngine`` is a context manager, like the llama.cpp ``Engine``; the
detached mode behind ``phasebench engine start --kind vllm`` keeps pid, process group, url and manifest
in the same state file as the llama.cpp one, so ``phasebench engine stop`` ends either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .child import ChildProcess, free_port, pdeathsig, port_in_use, wait_healthy
from .errors import EngineError
from .kinds import EngineKind
from .locate import cache_dir


@dataclass
class ManagedConfig:
    kind: EngineKind
    model: str  # a Hugging Face folder (or an id the engine can load offline)
    name: str | None = None  # served model name
    port: int = 0
    args: list[str] = field(default_factory=list)
    python: Path | None = None
    startup_timeout: float = 900.0
    env: dict[str, str] = field(default_factory=dict)


class ManagedEngine(ChildProcess):
    def __init__(self, cfg: ManagedConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.python: Path | None = None
        self.version = ""
        self.startup_s: float | None = None
        self.log_path = cache_dir() / "logs" / f"{cfg.kind.name}-{os.getpid()}-{int(time.time())}.log"

    @property
    def served_name(self) -> str:
        return self.cfg.name or Path(self.cfg.model).name

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def command(self) -> list[str]:
        assert self.python is not None
        return self.cfg.kind.command(self.python, self.cfg.model, self.served_name, self.port, self.cfg.args)

    def start(self, detached: bool = False) -> "ManagedEngine":
        k = self.cfg.kind
        if not (Path(self.cfg.model).exists() or "/" in self.cfg.model):
            raise EngineError(f"--model {self.cfg.model}: no such folder (give a Hugging Face model folder)")
        self.python = k.python(self.cfg.python)
        self.version = k.version(self.python)
        if self.cfg.port:
            if port_in_use(self.cfg.port):
                raise EngineError(f"port {self.cfg.port} on 127.0.0.1 is already in use; choose another or use 0")
            self.port = self.cfg.port
        else:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **k.default_env, **self.cfg.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                         preexec_fn=None if detached else pdeathsig)
        t0 = time.monotonic()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        name = self.cfg.kind.name
        with self.console.status(f"starting {name} {self.version} …") as status:
            def tick(elapsed: float) -> None:
                last = (self.log_tail(1).strip(" |") or "")[:100]
                status.update(f"starting {name} {self.version}: {elapsed:.0f} s · {last}")

            wait_healthy(self.proc, self.root + self.cfg.kind.health_path, self.cfg.startup_timeout, name,
                         self.log_path, poll_s=1.0, tick=tick)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        stop_group(p.pid, p)

    def manifest(self) -> dict[str, Any]:
        return {"engine": {
            "name": self.cfg.kind.name, "version": self.version, "python": str(self.python),
            "args": self.command()[1:], "model": self.cfg.model, "served_model_name": self.served_name,
            "log": str(self.log_path), "startup_s": self.startup_s,
            "env": {k: v for k, v in {**self.cfg.kind.default_env, **self.cfg.env}.items()},
        }}

    def __enter__(self) -> "ManagedEngine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_group(pid: int, proc: subprocess.Popen | None = None, grace: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if proc is not None and proc.poll() is None:
            time.sleep(0.1)
            continue
        if not _group_alive(pid):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    end = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < end:  # children that outlive the leader
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process in process group ``pgid``."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != "Z" and int(rest[2]) == pgid:
            return True
    return False


def start_detached_kind(kind: EngineKind, model: str, name: str | None, port: int, args: list[str],
                        python: Path | None, console: Console) -> dict[str, Any]:
    """``phasebench engine start --kind vllm``: start in the background, record it in the state file."""
    import json

    from .server import _pid_alive, _read_state, _state_path

    st = _read_state()
    if st and _pid_alive(st["pid"]):
        raise EngineError(f"an engine is already running at {st['url']} (pid {st['pid']}); `phasebench engine stop` first")
    eng = ManagedEngine(ManagedConfig(kind=kind, model=model, name=name, port=port, args=args, python=python), console)
    eng.start(detached=True)
    assert eng.proc is not None
    info = {"pid": eng.proc.pid, "pgid": eng.proc.pid, "port": eng.port, "url": eng.url, "model": eng.served_name,
            "log": str(eng.log_path), "kind": kind.name, **eng.manifest()}
    _state_path().parent.mkdir(parents=True, exist_ok=True)
    _state_path().write_text(json.dumps(info))
    eng.proc = None  # detached: not ours to stop on exit
    return info


def managed_manifest(base_url: str) -> dict[str, Any] | None:
    """The engine block of an engine ``phasebench engine start`` runs at ``base_url`` (for a run's manifest)."""
    from .server import _pid_alive, _read_state

    st = _read_state()
    if not st or not _pid_alive(st["pid"]) or st.get("url", "").rstrip("/") != base_url.rstrip("/"):
        return None
    eng = dict(st.get("engine") or {"name": st.get("kind", "llama.cpp"), "model": st.get("model")})
    eng["log"] = st.get("log")
    eng["started_by"] = "phasebench engine start"
    return eng

"""Start, health-check and stop ``llama-server`` on 127.0.0.1, leaving no orphan process.

``Engine`` is a context manager: the process is stopped on exit, on error and on Ctrl-C, and on Linux the
child also gets SIGTERM if phasebench itself dies (``PR_SET_PDEATHSIG``). A detached engine
(``phasebench engine start``) is the one exception; its pid and port are kept in a state file so
``phasebench engine stop`` can end it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .build import build_info, build_llama_server
from .child import ChildProcess, free_port, pdeathsig, port_in_use, wait_healthy
from .errors import EngineError
from .gguf import read_gguf
from .locate import MODEL_ALIAS, cache_dir, find_binary, find_model


@dataclass
class EngineConfig:
    binary: Path | None = None
    model_path: Path | None = None
    port: int = 0
    slots: int = 8
    ctx_per_slot: int = 2048
    threads: int | None = None
    alias: str | None = None
    startup_timeout: float = 120.0
    extra_args: list[str] = field(default_factory=list)


class Engine(ChildProcess):
    LOG_TAIL = 12

    def __init__(self, cfg: EngineConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.binary: Path | None = None
        self.model: Path | None = None
        self.log_path = cache_dir() / "logs" / f"llama-server-{os.getpid()}-{int(time.time())}.log"
        self.model_info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resolve(self, build: bool = True) -> None:
        self.model = find_model(self.cfg.model_path)
        self.model_info = read_gguf(self.model).summary()  # also rejects a file that is not GGUF
        binary = find_binary(self.cfg.binary)
        if binary is None:
            if not build:
                raise EngineError("no llama-server found: run `phasebench engine build`, or set PHASEBENCH_LLAMA_SERVER")
            binary = build_llama_server(console=self.console)
        self.binary = binary

    def args(self) -> list[str]:
        c = self.cfg
        threads = c.threads or max(1, os.cpu_count() or 1)
        return [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
                "-np", str(c.slots), "-c", str(c.ctx_per_slot * c.slots), "-t", str(threads),
                "--metrics", "--no-webui", "-a", c.alias or MODEL_ALIAS, *c.extra_args]

    def start(self, detached: bool = False) -> "Engine":
        if self.binary is None:
            self.resolve()
        if self.cfg.port:
            if port_in_use(self.cfg.port):
                raise EngineError(f"port {self.cfg.port} on 127.0.0.1 is already in use; choose another or use 0")
            self.port = self.cfg.port
        else:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=None if detached else pdeathsig, start_new_session=detached,
        )
        log.close()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        wait_healthy(self.proc, self.root + "/health", self.cfg.startup_timeout, "llama-server", self.log_path, tail=12)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def manifest(self) -> dict[str, Any]:
        assert self.binary is not None
        version = ""
        try:
            r = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=10)
            version = " ".join((r.stdout + r.stderr).split("\n")[0:2]).strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        return {
            "engine": {
                "name": "llama.cpp llama-server",
                "version": version,
                "binary": str(self.binary),
                "build": build_info(self.binary),
                "slots": self.cfg.slots,
                "ctx_per_slot": self.cfg.ctx_per_slot,
                "threads": self.cfg.threads or os.cpu_count(),
                "args": [a if a != str(self.model) else "<model>" for a in self.args()[1:]],
            },
            "model_file": self.model_info,
        }

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- detached engine for `phasebench engine start|stop|status` ----------------------------------------

STATE = "engine.json"


def _state_path() -> Path:
    return cache_dir() / STATE


def start_detached(port: int, slots: int, ctx: int, binary: Path | None, model_path: Path | None,
                   console: Console) -> dict[str, Any]:
    st = _read_state()
    if st and _pid_alive(st["pid"]):
        raise EngineError(f"an engine is already running at {st['url']} (pid {st['pid']}); `phasebench engine stop` first")
    eng = Engine(EngineConfig(binary=binary, model_path=model_path, port=port, slots=slots,
                              ctx_per_slot=ctx // max(slots, 1) if ctx else 2048), console)
    eng.start(detached=True)
    assert eng.proc is not None
    info = {"pid": eng.proc.pid, "port": eng.port, "url": eng.url, "model": MODEL_ALIAS, "log": str(eng.log_path),
            "kind": "llama.cpp", **eng.manifest()}
    _state_path().parent.mkdir(parents=True, exist_ok=True)
    _state_path().write_text(json.dumps(info))
    eng.proc = None  # detached: not ours to stop on exit
    return info


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_detached() -> str:
    st = _read_state()
    if not st or not _pid_alive(st["pid"]):
        _state_path().unlink(missing_ok=True)
        return "no engine running"
    if st.get("pgid"):  # vLLM/SGLang: the whole process group (engine-core children included)
        from .process import stop_group

        stop_group(st["pgid"])
    else:
        os.kill(st["pid"], signal.SIGTERM)
        for _ in range(50):
            if not _pid_alive(st["pid"]):
                break
            time.sleep(0.1)
        else:
            os.kill(st["pid"], signal.SIGKILL)
    _state_path().unlink(missing_ok=True)
    return f"stopped engine pid {st['pid']}"


def status_detached() -> str:
    st = _read_state()
    if not st or not _pid_alive(st["pid"]):
        return "no engine running"
    return f"{st.get('kind', 'llama.cpp')} engine running at {st['url']} (pid {st['pid']}, model {st['model']}, log {st['log']})"

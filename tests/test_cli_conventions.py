"""CLI conventions (issue #14): --version, shell completion, help panels with the RunSpec defaults, no import
cycle among the cli modules, and the request-shaping run flags (--tag, --header, --temperature, --extra-body)
checked against what the mock server really received."""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import phasebench
from phasebench.spec import RunSpec

from .conftest import ENV, spec
from .test_cli import cli

SRC = Path(phasebench.__file__).resolve().parent


def pb(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``phasebench ARGS`` in a subprocess with extra environment variables."""
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                          env={**ENV, **env}, timeout=120, check=False)


def mock_requests(server) -> list[dict]:
    with urllib.request.urlopen(server.root + "/_mock/requests", timeout=5) as r:
        return json.load(r)


def test_version_long_and_short():
    for flag in ("--version", "-V"):
        p = cli(flag)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"phasebench {phasebench.__version__}"


def test_every_module_imports_and_cli_modules_form_no_cycle():
    for m in pkgutil.walk_packages([str(SRC)], "phasebench."):
        if m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)  # a cycle at import time fails here ("partially initialized module")
    # the module-level imports between phasebench's cli modules (ast: what runs at import time)
    graph: dict[str, set[str]] = {}
    for path in SRC.glob("cli*.py"):
        mod = path.stem
        deps = graph.setdefault(mod, set())
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                deps.update(n.split(".")[0] for n in names if n.split(".")[0].startswith("cli"))
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names
                            if a.name.startswith("phasebench.cli"))
    assert "cli_common" in graph and graph["cli_common"] == set()
    for mod, deps in graph.items():  # the sub-modules import only the shared helpers
        if mod not in ("cli", "cli_common"):
            assert deps <= {"cli_common"}, (mod, deps)
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for d in graph.get(n, ()):
            assert state.get(d) != 1, f"import cycle: {' -> '.join(trail + [n, d])}"
            if d not in state:
                visit(d, trail + [n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_completion_is_on():
    p = cli("--help")
    assert "--install-completion" in p.stdout and "--show-completion" in p.stdout
    # typer detects the shell from the process tree (shellingham): run it under bash (`; exit` keeps bash the parent)
    p = subprocess.run(["bash", "-c", f"{sys.executable} -m phasebench.cli --show-completion; exit $?"],
                       capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert p.returncode == 0 and "complete -o default -F _phasebench_completion phasebench" in p.stdout, p.stderr
    p = pb(_PHASEBENCH_COMPLETE="complete_bash", COMP_WORDS="phasebench run --temp", COMP_CWORD="2")
    assert p.stdout.split() == ["--temperature"], p.stdout + p.stderr


def test_help_panels_defaults_examples_at_80_columns():
    top = pb("--help", COLUMNS="80").stdout
    for panel in ("Measure", "Results", "Model and predict", "Simulate", "Quality", "Engines and test servers"):
        assert f"─ {panel} ─" in top, panel
    assert "Examples:" in top and "Usage: phasebench" in top
    assert top.index("─ Measure ─") < top.index("─ Results ─") < top.index("─ Engines and test servers ─")
    text = pb("run", "--help", COLUMNS="80").stdout
    for panel in ("Target", "Load", "Workload and requests", "SLO and validity", "Model and hardware", "Quality",
                  "Transport and scale", "Output"):
        assert f"─ {panel}" in text, panel
    assert max(len(line) for line in text.splitlines()) <= 80
    # the SLO syntax whole (not cut with an ellipsis), and the defaults as RunSpec has them
    slo = text[text.index("--slo"):text.index("--mlperf")]
    assert "ttft=2000,tpot=200" in slo and "…" not in slo and "mlperf-llama2-70b-server" in slo
    d = RunSpec()
    def block(flag: str) -> str:  # the rows of one option
        return text[text.index(flag):].split("│ --", 2)[0]

    assert f"({d.input_tokens})" in block("--input-tokens") and f"({d.output_tokens})" in block("--output-tokens")
    assert f"{d.timeout:g}" in block("--timeout") and f"{d.stall_timeout:g}" in block("--stall-timeout")
    assert d.scenario.value in block("--scenario") and f"{d.requests}" in block("--requests")
    assert "Examples:" in text and "--extra-body" in text and "--header" in text


@pytest.mark.slow
def test_bad_run_flags_are_one_line_errors_naming_the_flag(tmp_path):
    url = "http://127.0.0.1:9/v1"  # never reached: every case fails before sending
    cases = [
        (["--tag", "novalue"], "--tag"),
        (["--tag", "bad key=x"], "--tag"),
        (["--extra-body", "{not json"], "--extra-body"),
        (["--extra-body", "[1, 2]"], "--extra-body"),
        (["--extra-body", '{"stream": false}'], "--extra-body"),
        (["--header", "NoColonSecretValue"], "--header"),
        (["--header", "Host: elsewhere"], "--header"),
        (["--temperature", "-1"], "--temperature"),
    ]
    for args, flag in cases:
        p = cli("run", "--url", url, "--out", str(tmp_path / "r"), *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], (args, p.stderr)
        assert "NoColonSecretValue" not in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("transport", ["aiohttp", "raw"])
def test_header_temperature_extra_body_reach_the_server(server, tmp_path, transport):
    secret = "s3cr3t-header-value"
    server.configure(keep_requests=True)
    run = phasebench.run(spec(server, tmp_path, requests=3, transport=transport, temperature=0.7,
                              headers={"X-Bench-Token": secret, "X-Tenant": "team-a"},
                              extra_body={"top_p": 0.9, "seed_extra": {"k": [1, 2]}}, tags={"gpu": "h100"}))
    assert run.manifest["transport"]["name"] == transport
    seen = mock_requests(server)
    posts = [r for r in seen if r["path"] == "/v1/completions"]
    assert len(posts) >= 3
    for r in posts:
        assert r["headers"].get("X-Bench-Token") == secret and r["headers"].get("X-Tenant") == "team-a"
        assert r["body"]["temperature"] == 0.7 and r["body"]["top_p"] == 0.9
        assert r["body"]["seed_extra"] == {"k": [1, 2]} and r["body"]["stream"] is True
    models = [r for r in seen if r["path"] == "/v1/models"]
    assert models and models[0]["headers"].get("X-Bench-Token") == secret  # discovery sends it too
    manifest_text = (tmp_path / "run" / "manifest.json").read_text()
    m = json.loads(manifest_text)
    assert m["spec"]["tags"] == {"gpu": "h100"}
    assert m["spec"]["headers"] == ["X-Bench-Token", "X-Tenant"]
    for f in (tmp_path / "run").iterdir():
        assert secret not in f.read_text(errors="replace"), f.name


def test_default_request_body_unchanged(server, tmp_path):
    server.configure(keep_requests=True)
    phasebench.run(spec(server, tmp_path, requests=1, transport="aiohttp"))
    posts = [r for r in mock_requests(server) if r["path"] == "/v1/completions"]  # the warm-up's and the run's
    assert posts and all(p["body"]["temperature"] == RunSpec().temperature for p in posts)
    assert not any("top_p" in p["body"] or "X-Bench-Token" in p["headers"] for p in posts)


@pytest.mark.parametrize("transport", ["aiohttp", "raw"])
def test_header_value_scrubbed_from_server_error_texts(server, tmp_path, transport):
    secret = "hdr-value-9f8e7d"
    server.configure(fault="500", fault_every=1, echo_header="X-Bench-Token")
    run = phasebench.run(spec(server, tmp_path, requests=2, transport=transport,
                              headers={"X-Bench-Token": secret}))
    errors = [r.error for r in run.records if r.error]
    assert errors and all("***" in e and secret not in e for e in errors), errors
    for f in (tmp_path / "run").iterdir():
        assert secret not in f.read_text(errors="replace"), f.name


@pytest.mark.slow
def test_tags_in_show_history_and_filter(server, tmp_path):
    db = str(tmp_path / "results.db")

    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return pb(*args, PHASEBENCH_DB=db)

    for name, gpu in (("a", "h100"), ("b", "a100")):
        p = run_cli("run", "--url", server.url, "--requests", "2", "--input-tokens", "8", "--output-tokens", "4",
                    "--out", str(tmp_path / name), "--tag", f"gpu={gpu}", "--tag", "team=perf")
        assert p.returncode in (0, 3), p.stderr
        assert f"gpu={gpu}" in p.stdout
    p = run_cli("show", str(tmp_path / "a"))
    assert p.returncode == 0 and "tags: gpu=h100  team=perf" in p.stdout
    p = run_cli("history", "--tag", "gpu=h100", "--json")
    rows = json.loads(p.stdout)
    assert [Path(r["path"]).name for r in rows] == ["a"] and rows[0]["tags"] == {"gpu": "h100", "team": "perf"}
    rows = json.loads(run_cli("history", "--tag", "team=perf", "--json").stdout)
    assert sorted(Path(r["path"]).name for r in rows) == ["a", "b"]
    rows = json.loads(run_cli("history", "--tag", "team=perf", "--tag", "gpu=a100", "--json").stdout)
    assert [Path(r["path"]).name for r in rows] == ["b"]
    p = run_cli("history")
    assert "gpu=a100" in p.stdout
    p = run_cli("history", "--tag", "gpu")
    assert p.returncode == 2 and "--tag" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_store_migrates_a_version_2_database_and_backfills_tags(tmp_path):
    from phasebench import store

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for script in store.MIGRATIONS[:2]:
        con.executescript(script)
    manifest = {"kind": "run", "created": "2026-11-30T10:00:00+00:00", "spec": {"scenario": "concurrency",
                                                                                "tags": {"gpu": "h100"}}}
    con.execute("INSERT INTO runs (id, path, kind, scenario, created, valid, completed, failed, manifest, summary)"
                " VALUES ('r1', '/x', 'run', 'concurrency', ?, 1, 1, 0, ?, '{}')",
                (manifest["created"], json.dumps(manifest)))
    con.execute("INSERT INTO runs (id, path, kind, created, valid, manifest, summary) VALUES ('r2', '/y', 'run', "
                "'2026-11-29T10:00:00+00:00', 1, '{\"spec\": {}}', '{}')")  # a run from before --tag
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    with store.Store(db) as st:
        assert st.version == store.SCHEMA_VERSION >= 3
        assert [r["id"] for r in st.history(tags={"gpu": "h100"})] == ["r1"]
        assert {r["id"]: r["tags"] for r in st.history()} == {"r1": {"gpu": "h100"}, "r2": {}}
        assert st.history(tags={"gpu": "a100"}) == []
    assert os.path.getsize(db) > 0


def test_bare_group_prints_its_help_once():
    for args in ((), ("engine",)):
        p = pb(*args)
        assert p.returncode == 0 and p.stdout.count("Usage: phasebench") == 1, (args, p.stdout)

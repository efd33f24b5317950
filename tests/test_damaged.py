"""Damaged run folders and databases: every command either shows what is whole with a warning (exit 0) or
refuses in one line (exit 2). Never a traceback. The folders are real runs against the mock server, then
damaged on disk the way crashes, disks and hostile files damage them."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phasebench import cli, cli_model, cli_results, cli_sim
from phasebench.records import read_records
from phasebench.results import NotARunError, Run, Summary, UnsafeFolderError
from phasebench.runner import run
from phasebench.store import Store

from .conftest import ENV, spec


def _app():
    if not any(c.callback is cli_results.history for c in cli.app.registered_commands):
        cli_model.register(cli.app)
        cli_results.register(cli.app)
        cli_sim.register(cli.app)
    return cli.app


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(_app(), list(args), env=env)


@pytest.fixture(scope="module")
def good(tmp_path_factory, mock) -> dict[str, Path]:
    """A real single run and a real sweep, written by phasebench against the mock server."""
    mock.configure(itl_ms=1)
    base = tmp_path_factory.mktemp("good")
    r = run(spec(mock, out=base / "run", requests=6, output_tokens=6))
    s = run(spec(mock, out=base / "sweep", scenario="sweep", concurrency=[1, 2], requests=3, output_tokens=4))
    assert r.valid and len(s.children) == 2
    return {"run": base / "run", "sweep": base / "sweep"}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _half(path: Path) -> None:
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 2])


# name -> (base folder, damage, expected exit code of show, a phrase the warning or error must hold)
def _bad_lines(d: Path) -> None:
    _append(d / "requests.jsonl", 'null\n[1]\n{"index": "x", "request_id": "r", "scheduled_ns": 1}\n'
            '{"index": 99, "request_id": "r", "scheduled_ns": 1, "chunk_ns": "abc"}\n{"index": 7, "requ')


def _wrong_summary(d: Path) -> None:
    def f(s):
        s["completed"] = "many"
        s["median_ttft_ms"] = [1]
        s["phasebench"]["metrics"]["ttft_ms"]["count"] = "lots"
        s["phasebench"]["reasons"] = [5, "ok"]
        return s
    _edit_json(d / "summary.json", f)


def _child_symlink_to_self(d: Path) -> None:
    (d / "loop").symlink_to(".")
    _edit_json(d / "manifest.json", lambda m: {**m, "children": [*m["children"], "loop"]})


def _child_symlink_outside(d: Path) -> None:
    outside = d.parent / (d.name + "-elsewhere")
    shutil.copytree(d / "00-c1", outside)
    (d / "away").symlink_to(outside)
    _edit_json(d / "manifest.json", lambda m: {**m, "children": ["away"]})


def _nested_cycle(d: Path) -> None:
    (d / "00-c1" / "back").symlink_to("..")
    _edit_json(d / "00-c1" / "manifest.json", lambda m: {**m, "children": ["back"]})


VARIANTS: dict[str, tuple[str, Callable[[Path], None], int, str]] = {
    "bad record lines": ("run", _bad_lines, 0, "damaged line(s) skipped (lines 7, 8, 9, 10, 11)"),
    "truncated summary": ("run", lambda d: _half(d / "summary.json"), 0, "summary.json is not valid JSON"),
    "summary is a list": ("run", lambda d: (d / "summary.json").write_text("[]"), 0, "holds list"),
    "summary is null": ("run", lambda d: (d / "summary.json").write_text("null"), 0, ""),
    "wrong-typed summary": ("run", _wrong_summary, 0, "completed ignored"),
    "phasebench block is a number": ("run", lambda d: _edit_json(d / "summary.json", lambda s: {**s, "phasebench": 5}),
                                     0, "phasebench ignored"),
    "summary missing": ("run", lambda d: (d / "summary.json").unlink(), 0, ""),
    "requests missing": ("run", lambda d: (d / "requests.jsonl").unlink(), 0, ""),
    "manifest is a list": ("run", lambda d: (d / "manifest.json").write_text("[]"), 2, "manifest.json is not a run manifest"),
    "truncated manifest": ("run", lambda d: _half(d / "manifest.json"), 2, "manifest.json is not valid JSON"),
    "manifest target is a number": ("run", lambda d: _edit_json(d / "manifest.json", lambda m: {**m, "target": 5}),
                                    2, "field 'target'"),
    "manifest holds binary": ("run", lambda d: (d / "manifest.json").write_bytes(b"\x00\xff\x1b[2J" * 50), 2,
                              "manifest.json is not valid JSON"),
    "child with ..": ("sweep", lambda d: _edit_json(d / "manifest.json", lambda m: {**m, "children": ["../run"]}),
                      2, "outside the folder"),
    "child absolute": ("sweep", lambda d: _edit_json(d / "manifest.json",
                                                     lambda m: {**m, "children": [str(d / "00-c1")]}),
                       2, "outside the folder"),
    "child is the folder": ("sweep", _child_symlink_to_self, 2, "the folder itself"),
    "child symlink escapes": ("sweep", _child_symlink_outside, 2, "leads outside the folder"),
    "nested cycle": ("sweep", _nested_cycle, 2, "leads outside the folder"),
    "children is a number": ("sweep", lambda d: _edit_json(d / "manifest.json", lambda m: {**m, "children": 5}),
                             2, "field 'children'"),
    "child missing": ("sweep", lambda d: shutil.rmtree(d / "01-c2"), 0, "'01-c2' has no manifest.json"),
    "child manifest is a list": ("sweep", lambda d: (d / "01-c2" / "manifest.json").write_text("[]"), 0,
                                 "that step is left out"),
    "child with bad lines": ("sweep", lambda d: _append(d / "00-c1" / "requests.jsonl", "null\n"), 0,
                             "1 damaged line(s) skipped"),
}


@pytest.fixture(scope="module")
def damaged(good, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("damaged")
    out = {}
    for i, (name, (kind, damage, _, _)) in enumerate(VARIANTS.items()):
        d = _copy(good[kind], base / f"v{i:02d}")
        damage(d)
        out[name] = d
    return out


def _one_line_error(stderr: str) -> bool:
    lines = [x for x in stderr.splitlines() if x.strip()]
    return len(lines) == 1 and lines[0].startswith("error:")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_command_survives_a_damaged_folder(name, damaged, good, tmp_path):
    _, _, code, phrase = VARIANTS[name]
    d = damaged[name]
    db = tmp_path / "results.db"
    commands = {
        "show": ["show", str(d)],
        "show --json": ["show", "--json", str(d)],
        "show --mlperf": ["show", "--mlperf", str(d)],
        "import": ["import", "--db", str(db), str(d)],
        "compare": ["compare", "--db", str(db), str(good["run"] if "sweep" not in str(d) else good["sweep"]), str(d)],
        "report": ["report", "--db", str(db), "-o", str(tmp_path / "r.html"), str(d)],
        "export": ["export", "--db", str(db), "-o", str(tmp_path / "x.csv"), str(d)],
    }
    for label, args in commands.items():
        r = invoke(*args)
        where = f"{name} / {label}: exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
        assert r.exception is None or isinstance(r.exception, SystemExit), where + f"\n{r.exception!r}"
        assert "Traceback" not in r.stdout + r.stderr, where
        assert r.exit_code == code, where
        if code == 2:
            assert _one_line_error(r.stderr) and phrase in r.stderr, where
        elif phrase and label != "show":  # show prints its warnings with the tables
            assert phrase in r.stderr, where
        elif phrase:
            assert phrase in r.stdout, where


@pytest.mark.slow
def test_damaged_folders_as_real_processes(damaged, tmp_path):
    """The same through the installed command line: stderr has one line or warnings, never a traceback."""
    for name in ("bad record lines", "truncated summary", "manifest is a list", "nested cycle"):
        for args in (["show", str(damaged[name])], ["import", "--db", str(tmp_path / "r.db"), str(damaged[name])]):
            p = subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                               env=ENV, timeout=120)
            assert "Traceback" not in p.stderr + p.stdout, (name, args, p.stderr)
            assert p.returncode == VARIANTS[name][2], (name, args, p.stderr)


def test_load_keeps_what_is_whole_and_names_the_lines(damaged, good):
    whole = Run.load(good["run"])
    r = Run.load(damaged["bad record lines"])
    assert len(r.records) == len(whole.records) == 6 and r.skipped_lines == 5
    assert read_records(damaged["bad record lines"] / "requests.jsonl").bad_lines == [7, 8, 9, 10, 11]
    r = Run.load(damaged["wrong-typed summary"])
    assert "completed" not in r.summary and "median_ttft_ms" not in r.summary
    assert r.summary["output_throughput"] == whole.summary["output_throughput"]  # the rest is kept
    assert "count" not in r.summary["phasebench"]["metrics"]["ttft_ms"]
    assert r.summary["phasebench"]["metrics"]["tpot_ms"] == whole.summary["phasebench"]["metrics"]["tpot_ms"]
    assert r.summary["phasebench"]["reasons"] == ["ok"]
    assert any("phasebench.reasons.0" in w for w in r.load_warnings)
    s = Run.load(damaged["child missing"])
    assert [c.path.name for c in s.children] == ["00-c1"] and s.load_warnings
    with pytest.raises(UnsafeFolderError):
        Run.load(damaged["child is the folder"])
    with pytest.raises(NotARunError, match=r"manifest.json is not a run manifest"):
        Run.load(damaged["manifest is a list"])


def test_what_is_written_is_what_the_typed_model_reads(good):
    """The writers' output validates against the typed summary with nothing dropped."""
    for p in (good["run"], good["sweep"], good["sweep"] / "00-c1"):
        raw = json.loads((p / "summary.json").read_text())
        Summary.model_validate(raw)
        back = Run.load(p)
        assert back.load_warnings == [] and back.summary == raw  # reading through the model changes nothing
        assert back.manifest == json.loads((p / "manifest.json").read_text())


def _damage_db_pages(path: Path) -> None:
    """Overwrite bytes in the middle of a real database file (not its header)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for off in range(4096, size - 4096, 4096 * 3):
            f.seek(off + 100)
            f.write(b"\xde\xad\xbe\xef" * 375)


@pytest.fixture
def damaged_db(mock, tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    db = tmp_path / "results.db"
    monkeypatch.setenv("PHASEBENCH_DB", str(db))
    mock.configure(itl_ms=1)
    for i in range(6):
        run(spec(mock, out=tmp_path / f"r{i}", requests=20, output_tokens=16))
    with Store(db) as st:
        assert st.count()[0] == 6
        ids = [r["id"] for r in st.history()]
        st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size > 40_000
    _damage_db_pages(db)
    return db, ids


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.slow
def test_damaged_database_is_refused_in_one_line_and_runs_still_finish(damaged_db, mock, tmp_path):
    damaged_db, ids = damaged_db
    env = {**ENV, "PHASEBENCH_DB": str(damaged_db)}
    refused = 0
    for args in (["history"], ["history", "--all", "--json"], ["export", "--summaries", "-o", str(tmp_path / "s.csv")],
                 *(["export", i, "-o", str(tmp_path / "x.csv")] for i in ids)):
        p = _cli(*args, env=env)
        assert "Traceback" not in p.stderr + p.stdout, (args, p.stderr)
        assert p.returncode in (0, 2), (args, p.returncode, p.stdout, p.stderr)
        if args[0] == "history" or "--summaries" in args:
            assert p.returncode == 2, (args, p.stdout)
        if p.returncode == 2:
            refused += 1
            assert _one_line_error(p.stderr), (args, p.stderr)
            assert str(damaged_db) in p.stderr and "move it aside" in p.stderr and "--db" in p.stderr, p.stderr
    assert refused >= 4  # history twice, the summaries, and at least one run whose requests sit on a damaged page
    with Store(damaged_db) as st, pytest.raises(Exception, match="damaged"):
        st.check()
    # a run still finishes, its folder intact; the database problem is a warning
    out = tmp_path / "after"
    p = _cli("run", "--url", mock.url, "--requests", "3", "--output-tokens", "4", "--out", str(out), env=env)
    assert p.returncode in (0, 3), p.stderr  # 3: finished but INVALID, which a busy machine can cause
    assert "Traceback" not in p.stderr and "not recorded" in p.stderr and "is damaged" in p.stderr, p.stderr
    back = Run.load(out)
    assert back.summary["completed"] == 3 and len(back.records) == 3 and back.load_warnings == []
    # moved aside, as the message says: a fresh database records again
    damaged_db.rename(damaged_db.with_suffix(".damaged"))
    p = _cli("import", str(out), env=env)
    assert p.returncode == 0, p.stderr
    with Store(damaged_db) as st:
        assert st.count()[0] == 1


def test_a_file_that_is_not_a_database(tmp_path):
    db = tmp_path / "results.db"
    db.write_bytes(b"this is not sqlite\n" * 400)
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "history", "--db", str(db)], capture_output=True,
                       text=True, env=ENV, timeout=120)
    assert p.returncode == 2 and _one_line_error(p.stderr) and "move it aside" in p.stderr, p.stderr
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("SELECT * FROM runs")


def test_a_wrong_typed_field_is_reported_on_write_and_the_file_still_written(tmp_path):
    from phasebench.results import RunFolder

    f = RunFolder(tmp_path / "w")
    with pytest.warns(RuntimeWarning, match="completed"):
        f.write_summary({"completed": "seven", "phasebench": {"valid": True}})
    assert json.loads((tmp_path / "w" / "summary.json").read_text())["completed"] == "seven"
    with pytest.warns(RuntimeWarning, match="children"):
        f.write_manifest({"kind": "sweep", "children": "00-c1"})
    with pytest.raises(NotARunError, match="field 'children'"):
        Run.load(tmp_path / "w")

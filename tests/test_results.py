"""Results people keep: the SQLite database, compare with significance, reports, the MLPerf summary."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from phasebench.compare import compare, mann_whitney
from phasebench.report.document import md_escape, write_report
from phasebench.report.mlperf import summary_text
from phasebench.report.plots import pareto_front
from phasebench.results import Run
from phasebench.runner import run
from phasebench.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    StoreError,
    default_path,
    import_folder,
    record_run,
)

from .conftest import ENV, spec


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=120)


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    p = tmp_path / "results.db"
    monkeypatch.setenv("PHASEBENCH_DB", str(p))
    return p


def test_runs_are_recorded_and_round_trip(server, tmp_path, db):
    r = run(spec(server, tmp_path, requests=5))
    with Store(db) as st:
        rows = st.history()
        assert len(rows) == 1 and rows[0]["completed"] == 5 and rows[0]["model"] == "mock-model"
        back = st.load(rows[0]["id"])
    assert back.summary == r.summary and back.manifest == r.manifest
    assert [x.chunk_ns for x in back.records] == [x.chunk_ns for x in r.records]
    # export from the database and from the folder agree; csv, jsonl
    out_csv = tmp_path / "req.csv"
    p = cli("export", rows[0]["id"][:8], "--format", "csv", "-o", str(out_csv), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 0, p.stderr
    table = list(csv.DictReader(out_csv.open()))
    assert len(table) == 5 and float(table[0]["ttft_ms"]) > 0
    pq = pytest.importorskip("pyarrow.parquet")
    out_pq = tmp_path / "req.parquet"
    p = cli("export", str(tmp_path / "run"), "--format", "parquet", "-o", str(out_pq))
    assert p.returncode == 0, p.stderr
    t = pq.read_table(out_pq)
    assert t.num_rows == 5 and t.column("ttft_ms").to_pylist()[0] == pytest.approx(float(table[0]["ttft_ms"]))
    out_jsonl = tmp_path / "sum.jsonl"
    p = cli("export", "--summaries", "--format", "jsonl", "-o", str(out_jsonl), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 0 and json.loads(out_jsonl.read_text().splitlines()[0])["completed"] == 5
    # import into another database
    other = tmp_path / "other.db"
    rid, notes = import_folder(tmp_path / "run", other)
    with Store(other) as st:
        assert st.load(rid).summary == r.summary and notes == []
    p = cli("history", "--model", "mock", "--json", env={**ENV, "PHASEBENCH_DB": str(db)})
    assert json.loads(p.stdout)[0]["id"] == rows[0]["id"]


def test_sweeps_record_their_points(server, tmp_path, db):
    run(spec(server, tmp_path, scenario="sweep", concurrency=[1, 2], requests=3))
    with Store(db) as st:
        assert len(st.history()) == 1 and len(st.history(top_only=False)) == 3
        top = st.history()[0]
        assert len(st.load(top["id"]).children) == 2


def _writer(db: str, folder: str, n: int) -> None:
    run_ = Run.load(folder)
    with Store(db) as st:
        for i in range(n):
            run_.manifest["created"] = f"{os.getpid()}-{i}"  # a distinct run each time
            st.record(run_)


def test_concurrent_writers_do_not_corrupt(server, tmp_path, db):
    run(spec(server, tmp_path, requests=20))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), str(tmp_path / "run"), 15)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(db) as st:
        runs, reqs = st.count()
        assert runs == 1 + 45 and reqs == 20 * 46
        assert st.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_old_schema_is_migrated_without_loss(server, tmp_path):
    r = run(spec(server, tmp_path, requests=3, model_spec="smollm2-135m", hardware="h100-sxm"))
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.executescript(MIGRATIONS[0])
    con.execute("INSERT INTO runs (id, kind, manifest, summary, created) VALUES ('abc', 'run', ?, ?, '2026')",
                (json.dumps(r.manifest), json.dumps(r.summary)))
    for x in r.records:
        from dataclasses import asdict
        con.execute("INSERT INTO requests (run_id, idx, record) VALUES ('abc', ?, ?)", (x.index, json.dumps(asdict(x))))
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    with Store(old) as st:
        assert st.version == SCHEMA_VERSION
        row = st.db.execute("SELECT hardware FROM runs WHERE id='abc'").fetchone()
        assert row[0] == "h100-sxm"
        ttfts = [v for (v,) in st.db.execute("SELECT ttft_ms FROM requests WHERE run_id='abc'")]
        assert len(ttfts) == 3 and all(v > 0 for v in ttfts)
        assert st.load("abc").summary == r.summary
    con = sqlite3.connect(old)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer than this phasebench"):
        Store(old)


def test_locked_or_unwritable_database_costs_a_warning_not_the_run(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PHASEBENCH_DB", "/proc/nope/results.db")
    r = run(spec(server, tmp_path, requests=2))
    assert (tmp_path / "run" / "summary.json").exists() and r.summary["completed"] == 2
    _, warning = record_run(r)
    assert "not recorded" in warning and "phasebench import" in warning
    p = cli("history", env={**ENV, "PHASEBENCH_DB": "/proc/nope/results.db"})
    assert p.returncode == 2 and "results database" in p.stderr
    # locked: another connection holds an exclusive transaction
    dbp = tmp_path / "locked.db"
    Store(dbp).close()
    holder = sqlite3.connect(dbp, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            Store(dbp, timeout=0.2).record(r)
    finally:
        holder.execute("ROLLBACK")
    assert default_path() == Path("/proc/nope/results.db")


def test_truncated_requests_file_is_read_and_counted(server, tmp_path, db):
    run(spec(server, tmp_path, requests=4))
    f = tmp_path / "run" / "requests.jsonl"
    f.write_bytes(f.read_bytes()[:-40])  # a crash mid-write
    p = cli("import", str(tmp_path / "run"), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 0 and "1 damaged line(s) skipped (line 4)" in p.stderr and "requests.jsonl" in p.stderr
    p = cli("import", str(tmp_path), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 2 and "not a phasebench run folder" in p.stderr


def test_mann_whitney_matches_scipy():
    import numpy as np
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 40), rng.normal(10.6, 1, 35)
    b[:5] = a[:5]  # ties
    assert mann_whitney(a, b) == pytest.approx(mannwhitneyu(a, b, method="asymptotic").pvalue, rel=1e-6)


def test_compare_flags_a_real_difference_and_not_noise(server, tmp_path, db):
    def one(name: str, ttft: float) -> Run:
        server.configure(ttft_ms=ttft, itl_ms=2, itl_jitter_ms=0.5)
        return run(spec(server, tmp_path / name, requests=30, output_tokens=6, concurrency=[2], scenario="concurrency"))

    a, a2, b = one("a", 50), one("a2", 50), one("b", 60)
    c = compare([a, b])
    ttft = next(r for r in c.rows if r.metric == "ttft_ms" and r.stat == "p50")
    assert ttft.verdicts[1] == "significant" and ttft.changes[1] == pytest.approx(0.2, abs=0.03)
    same = compare([a, a2])
    ttft = next(r for r in same.rows if r.metric == "ttft_ms" and r.stat == "p50")
    assert ttft.verdicts[1] == "not significant"
    assert not same.warnings
    p = cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"))
    assert p.returncode == 0 and "95% CI" in p.stdout and "significant" in p.stdout
    p = cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--json")
    row = next(r for r in json.loads(p.stdout)["rows"] if r["metric"] == "ttft_ms" and r["stat"] == "p50")
    assert row["verdicts"][1] == "significant"


def test_compare_warns_when_runs_are_not_comparable(server, tmp_path, db):
    a = run(spec(server, tmp_path / "a", requests=4, input_tokens=16))
    b = run(spec(server, tmp_path / "b", requests=4, input_tokens=64))
    assert any("input length" in w for w in compare([a, b]).warnings)


def test_pareto_front():
    pts = [(10, 100), (12, 90), (15, 200), (20, 150), (30, 400), (25, 400)]
    assert pareto_front(pts) == [(10, 100), (15, 200), (25, 400)]


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory, mock):
    d = tmp_path_factory.mktemp("rep")
    mock.configure(model="<b>evil</b> | `x`", ttft_ms=20, ttft_per_input_token_ms=0.2, itl_ms=3)
    try:
        a = run(spec(mock, d / "a", scenario="sweep", concurrency=[1, 2, 4], requests=6, input_tokens="48:16",
                     output_tokens=12, model_spec="smollm2-135m", hardware="h100-sxm"))
        mock.configure(model="<b>evil</b> | `x`", ttft_ms=30, ttft_per_input_token_ms=0.2, itl_ms=4)
        b = run(spec(mock, d / "b", scenario="sweep", concurrency=[1, 2, 4], requests=6, input_tokens="48:16",
                     output_tokens=12, model_spec="smollm2-135m", hardware="h100-sxm"))
    finally:
        mock.configure()
    return d, a, b


def test_html_report_is_self_contained_with_every_plot(report_runs):
    d, a, b = report_runs
    out = d / "report.html"
    write_report([a, b], out, ["baseline", "slower"])
    text = out.read_text()
    for title in ("Prefill: TTFT against input length", "Decode: TPOT and throughput", "Throughput against latency",
                  "Latency distributions", "Load over time", "against the roofline", "The engine over time"):
        assert title in text, title
    assert text.count("data:image/png;base64,") == 7
    # the target's URL may appear as text; nothing may be loaded from the network
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text) and not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert "<script" not in text and "@import" not in text and "<link" not in text
    assert "<b>evil" not in text and "&lt;b&gt;evil&lt;/b&gt;" in text
    assert "VALID" in text and "environment" in text


def test_markdown_report_writes_pngs_and_escapes(report_runs):
    d, a, _ = report_runs
    files = write_report([a], d / "r.md")
    md = files[0].read_text()
    assert len(files) == 8 and all(f.stat().st_size > 1000 for f in files[1:])  # the .md + 7 plots (the engine over time included)
    assert "<b>" not in md and r"\|" in md and "r_files/prefill.png" in md
    assert md_escape("a|b*c") == r"a\|b\*c"


def test_report_command_and_mlperf_summary(report_runs, server, tmp_path):
    d, a, _ = report_runs
    p = cli("report", str(d / "a" / "run"), "-o", str(tmp_path / "x.html"))
    assert p.returncode == 0 and (tmp_path / "x.html").exists()
    p = cli("report", str(tmp_path), "-o", str(tmp_path / "y.html"))
    assert p.returncode == 2 and "not a phasebench run folder" in p.stderr
    r = run(spec(server, tmp_path / "s", scenario="server", rate=[50], requests=20, slo="ttft=2000,tpot=200"))
    text = summary_text(r)
    assert "Scenario : Server" in text and "Result is : INVALID" in text
    assert "  Min duration satisfied : NO" in text and "  Performance constraints satisfied : Yes" in text
    assert re.search(r"50.00 percentile first token latency \(ns\)   : \d{7,}", text)
    p = cli("show", "--mlperf", str(tmp_path / "s" / "run"))  # the file beside summary.json, as written
    assert p.returncode == 0 and p.stdout == (tmp_path / "s" / "run" / "mlperf_log_summary.txt").read_text()


def test_vllm_bench_save_result_imports_as_a_run(tmp_path):
    """A `vllm bench serve --save-result` file (the keys its benchmark_serving writes) becomes a run folder that
    `show`, `compare` and the database read; its TTFT/TPOT percentiles are recomputed from its own lists."""
    ttfts = [0.050, 0.060, 0.055, 0.070]
    itls = [[0.010] * 7, [0.012] * 7, [0.011] * 7, [0.010] * 7]
    res = {"date": "20261201-120000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B", "tokenizer_id":
           "meta-llama/Llama-3.1-8B", "num_prompts": 5, "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 2,
           "duration": 1.5, "completed": 4, "total_input_tokens": 512, "total_output_tokens": 32,
           "request_throughput": 2.67, "output_throughput": 21.3, "total_token_throughput": 362.7,
           "input_lens": [128, 128, 128, 128, 128], "output_lens": [8, 8, 8, 8, 0], "ttfts": ttfts + [0.0],
           "itls": itls + [[]], "generated_texts": ["x"] * 4 + [""], "errors": ["", "", "", "", "HTTP 500"],
           "mean_ttft_ms": 58.75}
    f = tmp_path / "vllm-result.json"
    f.write_text(json.dumps(res))
    db = tmp_path / "r.db"
    p = cli("import", str(f), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 0, p.stderr
    run = Run.load(tmp_path / "vllm-result")
    assert run.manifest["imported_from"]["tool"] == "vllm bench serve"
    assert "SUT name : meta-llama/Llama-3.1-8B (imported from vllm bench serve)" in (tmp_path / "vllm-result" / "mlperf_log_summary.txt").read_text()
    assert run.summary["completed"] == 4 and run.summary["failed"] == 1
    assert run.summary["median_ttft_ms"] == pytest.approx(57.5, abs=1e-6)  # recomputed: median of 50, 55, 60, 70
    assert run.summary["median_tpot_ms"] == pytest.approx(10.5, abs=1e-6)  # 7 gaps over 7 tokens after the first
    assert run.summary["backend"] == "vllm" and run.summary["duration"] == 1.5  # vLLM's own run-level figures
    assert [r.error_type for r in run.records].count("imported_error") == 1
    assert run.manifest["created"].startswith("20") and "T" in run.manifest["created"]  # ISO 8601, sortable
    p = cli("history", "--since", "2000-01-01", env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 0 and "1 run(s)" in p.stdout and "2026-12-01T12:00" in p.stdout, p.stdout  # by date
    p = cli("show", str(tmp_path / "vllm-result"))
    assert p.returncode == 0 and "TTFT" in p.stdout
    bad = tmp_path / "other.json"
    bad.write_text('{"a": 1}')
    p = cli("import", str(bad), env={**ENV, "PHASEBENCH_DB": str(db)})
    assert p.returncode == 2 and "vllm bench serve" in p.stderr

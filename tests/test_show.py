"""`show` prints what each kind of folder printed at the end of its run (sweep, plan, a plan that stopped early),
and the report of a plan leads with its answer: verdict and plain words first, each MBU/MFU figure with its step,
the per-point tables with the chosen point marked, the environment folded last. Against the mock server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from phasebench.report import fmt as F
from phasebench.report.blocks import Table
from phasebench.report.document import write_report
from phasebench.results import Run
from phasebench.runner import run

from .conftest import ENV, spec


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasebench.cli", *args], capture_output=True, text=True,
                          env={**ENV, "PHASEBENCH_DB": "off"}, timeout=300, check=False)


@pytest.fixture(scope="module")
def plan(mock, tmp_path_factory):
    """A quick plan against the mock server, with a catalog model and hardware (so it has MBU/MFU figures)."""
    mock.configure(ttft_ms=20, ttft_per_input_token_ms=0.02, itl_ms=5)
    out = tmp_path_factory.mktemp("plan") / "plan"
    try:
        p = cli("run", "--url", mock.url, "--plan", "--quick", "--plan-budget", "40s", "--model-spec", "smollm2-135m",
                "--hardware", "h100-sxm", "--out", str(out))
    finally:
        mock.configure()
    # the exit code tells the truth: 3 when a step came out INVALID (a busy machine's late reads); show works either way
    assert p.returncode == (0 if Run.load(out).valid else 3), p.stderr[-3000:]
    return out, p.stdout


def test_fmt_writes_every_number_one_way():
    assert F.num(1234.56) == "1,234.6" and F.num(7) == "7" and F.num(None) == "-" and F.num(float("nan")) == "-"
    assert F.pct(0.0712) == "7.1%" and F.pct(0.0712, 0) == "7%" and F.change(0.032) == "+3.2%"
    assert F.ms(12.34, unit=True) == "12.3 ms" and F.seconds(0.0032) == "3.2 ms" and F.seconds(4.5e-5) == "45 µs"
    assert F.rate(1500, "tok/s") == "1,500 tok/s" and F.usd(1.23456) == "$1.235" and F.count(12345.0) == "12,345"
    assert F.size(270e6) == "270 MB" and F.size(512) == "512 B" and F.sig(float("inf")) == "∞" and F.sig(123456) == "123,456"
    # no Python reprs: mappings and lists become words
    assert F.text({"a": 1, "b": [1, 2], "c": None}) == "a=1, b=1, 2" and F.text([]) == "-" and F.text(True) == "yes"
    assert F.slo({"ttft_ms": 2000.0, "tpot_ms": 100.0, "percentile": 99.0}) == "p99 ttft≤2000 ms, tpot≤100 ms"
    t = Table("t", ("what", "a", "b"), [["x", "1", "-"], ["y", "-", "-"]], marked={0}).compact()
    assert t.rows == [["x", "1"]] and t.columns == ["what", "a"] and t.marked == {0}   # no row or column of "-"


def test_show_prints_a_sweeps_points_and_verdict(server, tmp_path):
    server.configure(ttft_ms=10, itl_ms=3)
    r = run(spec(server, tmp_path, scenario="sweep", concurrency=[1, 2, 4], requests=6))
    p = cli("show", str(r.path))
    assert p.returncode == 0, p.stderr
    for point in ("00-c1", "01-c2", "02-c4"):   # one row per point, every request done
        assert re.search(rf"{point} .* 6 / 0 ", p.stdout), p.stdout
    assert "Sweep: 3 point(s)" in p.stdout and "highest" in p.stdout and p.stdout.rstrip().endswith("VALID")
    assert "{'" not in p.stdout and "[1, 2" not in p.stdout


@pytest.mark.slow
def test_show_prints_the_plans_own_tables(plan):
    out, printed = plan
    p = cli("show", str(out))
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert "Prefill: TTFT against input length" in p.stdout and "Decode: TPOT and throughput" in p.stdout
    for d in s["decode_sweep"]:   # one row per decode point
        assert re.search(rf"^\W*{d['concurrency']}\s", p.stdout, re.MULTILINE), p.stdout
    assert "sets the server step's rate" in p.stdout and "decode MBU step" in p.stdout
    assert f"plan: {'VALID' if Run.load(out).valid else 'INVALID'}" in p.stdout and "Where the phases sit" in p.stdout
    # the very tables the run printed at its end: one printer
    body = p.stdout.split("\n", 1)[1]
    assert printed.endswith(body), (printed[-1500:], body[-1500:])


@pytest.mark.slow
def test_show_on_a_plan_that_stopped_early(plan, tmp_path):
    out, _ = plan
    part = tmp_path / "partial"
    shutil.copytree(out, part)
    m = json.loads((part / "manifest.json").read_text())
    steps = [n for n in m["children"] if n.startswith("prefill-")]
    m["children"] = steps
    (part / "manifest.json").write_text(json.dumps(m))
    (part / "summary.json").write_text(json.dumps({"steps": steps, "phasebench": {
        "valid": False, "partial": True, "reasons": ["partial: the plan stopped in step decode-c1"], "warnings": []}}))
    p = cli("show", str(part))
    assert p.returncode == 0, p.stderr
    assert f"Steps done: {len(steps)}" in p.stdout and all(n in p.stdout for n in steps)
    assert "plan: INVALID (partial" in p.stdout and "stopped in step decode-c1" in p.stdout


class _Doc(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.rows: list[list[str]] = []
        self.marked: list[list[str]] = []
        self._row: list[str] | None = None
        self._mark = False
        self.details = 0

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row, self._mark = [], ("class", "m") in attrs
        if tag == "details":
            self.details += 1

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            if self._mark:
                self.marked.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())
        self.order.append(data)


@pytest.mark.slow
def test_the_plan_report_leads_with_the_answer(plan):
    out, _ = plan
    r = Run.load(out)
    html_file = out.parent / "report.html"
    write_report([r], html_file)
    html = html_file.read_text()
    doc = _Doc()
    doc.feed(html)
    text = "".join(doc.order)
    # title, verdict and plain words first; the environment last, folded
    at = {k: text.index(k) for k in ("phasebench report", "Result: ", "decode MBU", "Prefill: TTFT against input",
                                      "Key figures", "Plots", "What was run")}
    assert list(at) == sorted(at, key=at.get), at
    assert doc.details == 1 and html.index("<details>") > html.index("data:image/png")
    # one decode MBU and one prefill MFU, each with the step it comes from, the verdict's own figure
    s = r.summary
    fig = {f["metric"]: f for f in s["figures"]}
    mbu = f"decode MBU {F.pct(fig['decode MBU']['fraction'], 0)} (step {fig['decode MBU']['step']}"
    assert mbu in text and fig["decode MBU"]["step"] == "decode-c1"
    assert len(set(re.findall(r"decode MBU (\d+(?:\.\d+)?%)", text))) == 1, re.findall(r"decode MBU \S+", text)
    assert f"prefill MFU {F.pct(fig['prefill MFU']['fraction'], 0)} (step {fig['prefill MFU']['step']}" in text
    # per-point tables of both sweeps; the decode point that set the server rate is marked
    assert any(row[0] == str(s["capacity_step"].split("c")[-1]) and "sets the server step's rate" in row[-1]
               for row in doc.marked), doc.marked
    assert all(any(c != F.MISSING for c in row[1:]) for row in doc.rows if len(row) > 1)   # no rows of "-"
    assert "{'" not in text and "['" not in text and "<script" not in html


@pytest.mark.slow
def test_two_plans_side_by_side_show_only_the_verdicts_mbu(plan):
    out, _ = plan
    r = Run.load(out)
    md = out.parent / "two" / "r.md"
    write_report([r, r], md, ["a", "b"])
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| decode MBU |")]
    # one row, in the key figures, each cell labelled with its step; the comparison leaves the server step's out
    assert len(rows) == 1 and rows[0].count("step decode\\-c1") == 2, rows
    assert "Comparison (change against the first run)" in text


# --- the typed views every reader takes (results.Run.result / Run.meta) --------------------------------------
@pytest.fixture(scope="module")
def kinds(mock, tmp_path_factory):
    """One folder of each kind but the plan (which needs the real engine: its own, slow, test): a measured run
    (with roofline and cost), a sweep, a simulated run."""
    mock.configure(ttft_ms=10, itl_ms=3)
    root = tmp_path_factory.mktemp("kinds")
    try:
        one = run(spec(mock, root, scenario="concurrency", concurrency=[2], requests=8, model_spec="smollm2-135m",
                       hardware="h100-sxm", slo="mlperf-llama3.1-8b-server", out=root / "run"))
        sweep = run(spec(mock, root, scenario="sweep", concurrency=[1, 2], requests=4, out=root / "sweep"))
    finally:
        mock.configure()
    p = cli("simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--rate", "5", "--requests", "60",
            "--slo", "mlperf-llama3.1-8b-server", "--out", str(root / "sim"))
    assert p.returncode == 0, p.stderr
    return {"run": one.path, "sweep": sweep.path, "simulated": root / "sim"}


def _every_reader(r: Run) -> str:
    """What every shipped reader makes of one loaded folder, as one text."""
    from rich.console import Console

    from phasebench.compare import compare
    from phasebench.loadgen import log_summary
    from phasebench.openmetrics import exposition
    from phasebench.report.blocks import to_markdown
    from phasebench.report.document import build_blocks
    from phasebench.report.mlperf import summary_text
    from phasebench.report.terminal import print_run

    con = Console(record=True, width=200)
    print_run(r, con)
    parts = [con.export_text(), to_markdown(build_blocks([r, r], ["a", "b"], []), "x"), exposition([r]).decode()]
    parts += [log_summary(leaf.meta, leaf.result) + summary_text(leaf) for leaf in r.leaves()]
    c = compare([r.leaves()[0], r.leaves()[-1]], ["first", "last"])
    return "\n".join(parts) + "\n" + " ".join(str(row.values) for row in c.rows)


def test_every_reader_works_on_the_typed_object_of_each_folder_kind(kinds, tmp_path):
    _every_reader_on(kinds, tmp_path)


@pytest.mark.slow
def test_every_reader_works_on_the_typed_object_of_a_plan(plan, tmp_path):
    _every_reader_on({"plan": plan[0]}, tmp_path)


def _every_reader_on(kinds: dict, tmp_path) -> None:
    from phasebench.report.tables import headline, lead_lines
    from phasebench.results import Manifest, Summary
    from phasebench.store import Store, record_run

    for kind, path in kinds.items():
        r = Run.load(path)
        assert isinstance(r.result, Summary) and isinstance(r.meta, Manifest) and not r.load_warnings, kind
        assert all(isinstance(leaf.result, Summary) for leaf in r.leaves())
        text = _every_reader(r)
        assert "{'" not in text and "Traceback" not in text, kind
        head, _ = headline(r)
        if kind == "plan":   # the plan's own keys, typed: its decode table and its server step's words
            assert r.result.decode_sweep and r.result.server is not None
            assert f"{r.result.decode_sweep[0].concurrency} " in text and "Server step at" in text
        else:   # the headline figures come from the typed summary, formatted once
            assert f"{F.num(head.result.output_throughput)} output tok/s" in " ".join(lead_lines(r)), kind
        if kind == "run":
            rf, c = r.result.phasebench.roofline, r.result.phasebench.cost
            assert rf is not None and rf.mbu is not None and f"decode MBU {F.pct(rf.mbu)}" in text
            assert c is not None and F.usd(c.usd_per_1m_tokens) in text
        if kind == "simulated":
            assert r.meta.simulated and "simulated" in text
        rid, warning = record_run(r, tmp_path / f"{kind}.db")
        assert warning is None and rid
        with Store(tmp_path / f"{kind}.db") as st:
            row = next(h for h in st.history() if h["id"] == rid)
            assert row["output_throughput"] == r.result.output_throughput and row["model"] == r.meta.model


def test_a_misspelled_field_raises_instead_of_printing_a_dash(kinds, monkeypatch):
    from phasebench.report import tables

    r = Run.load(kinds["run"])
    assert F.num(r.summary.get("output_throughput_tok")) == F.MISSING   # the dict: a typo reads as "-"
    for typo in (lambda: r.result.output_throughput_tok, lambda: r.result.phasebench.metrics.ttft_msx,
                 lambda: r.result.phasebench.slo.atainment, lambda: r.meta.spec.scenarioo):
        with pytest.raises(AttributeError):
            typo()
    # a reader with a misspelled key fails loudly, not with a quiet '-' in the key figures
    rows = list(tables.KEY_ROWS)
    rows[5] = ("request throughput (req/s)", lambda s, f: F.num(s.request_thruput, 2))
    monkeypatch.setattr(tables, "KEY_ROWS", tuple(rows))
    with pytest.raises(AttributeError, match="request_thruput"):
        tables.key_figures([r], ["a"])


def test_an_older_folder_without_the_new_blocks_still_loads_and_renders(kinds, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(kinds["run"], old)
    s = json.loads((old / "summary.json").read_text())
    for k in ("roofline", "cost", "server_view", "workload", "warmup", "slo", "client", "server_timing", "tokens"):
        s["phasebench"].pop(k, None)
    for k in [k for k in s if "itl" in k or k in ("request_goodput", "model_id", "date")]:
        del s[k]
    (old / "summary.json").write_text(json.dumps(s))
    m = json.loads((old / "manifest.json").read_text())
    for k in ("server_engine", "transport", "tokenizer"):
        m.pop(k, None)
    for k in ("slo", "tags", "seed", "input_tokens", "output_tokens"):
        m["spec"].pop(k, None)
    m["engine"] = {"name": "llama.cpp", "slots": "many"}   # a field of the wrong type: left out, not the folder
    (old / "manifest.json").write_text(json.dumps(m))
    r = Run.load(old)
    assert [w for w in r.load_warnings if "engine ignored" in w] == r.load_warnings and len(r.load_warnings) == 1
    pb = r.result.phasebench
    assert pb.roofline is None and pb.cost is None and pb.slo is None and pb.client.max_in_flight is None
    assert r.result.median_itl_ms is None and r.meta.engine is None
    text = _every_reader(r)
    assert "decode MBU" not in text and "cost:" not in text and "{'" not in text
    p = cli("show", str(old))
    assert p.returncode == 0, p.stderr
    assert re.search(r"max in flight\s+│?\s*-", p.stdout) and re.search(r"^(IN)?VALID", p.stdout, re.MULTILINE), p.stdout

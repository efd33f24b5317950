"""The quality guard: scoring on hand-worked inputs, probe-set validation, a broken (garbage) mock server caught,
references and agreement, compare's paired test. The real-engine checks are in test_quality_engine.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phasebench.quality import QualityError, load_probe_set
from phasebench.quality.probes import Probe
from phasebench.quality.scoring import (
    answer_words,
    broken_reasons,
    choice_logprobs,
    exact_match,
    lcs_length,
    prefix_agreement,
    rouge_l,
    score_item,
    words,
)
from phasebench.quality.stats import paired, sign_flip_p
from phasebench.results import Run
from phasebench.runner import run

from .conftest import ENV, spec

# ---- scoring on known inputs ------------------------------------------------------------------------------

def test_rouge_l_hand_worked():
    # LCS of "the cat sat on the mat" and "the cat was on the mat" is "the cat on the mat" (5 words):
    # P = 5/6, R = 5/6, F1 = 5/6
    assert lcs_length(words("the cat sat on the mat"), words("the cat was on the mat")) == 5
    assert rouge_l(words("the cat sat on the mat"), words("the cat was on the mat")) == pytest.approx(5 / 6)
    # Lin (2004)'s example: "police killed the gunman" vs reference "the gunman was shot by police":
    # LCS "the gunman" = 2, P = 2/4, R = 2/6, F1 = 2·0.5·(1/3)/(0.5 + 1/3) = 0.4
    assert rouge_l(words("police killed the gunman"), words("the gunman was shot by police")) == pytest.approx(0.4)
    assert rouge_l([], words("x")) == 0.0 and rouge_l(words("a b"), words("a b")) == 1.0


def test_exact_match_and_answer_cut():
    # punctuation and case do not count; the continuation is cut to the reference's length and its first line
    assert words("Six, seven!") == ["six", "seven"]
    assert answer_words(" six, seven, eight, nine, ten, eleven,", "six, seven, eight, nine, ten") == ["six", "seven", "eight", "nine", "ten"]
    assert exact_match(" six, seven, eight, nine, ten, eleven,", "six, seven, eight, nine, ten")
    assert not exact_match(" six, seven\neight, nine, ten", "six, seven, eight, nine, ten")
    assert exact_match(" window\nword:", "window") and not exact_match(" windows", "window")


def test_prefix_agreement():
    assert prefix_agreement(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert prefix_agreement(["a", "x", "c"], ["a", "b", "c", "d"]) == 0.25  # diverges at the second of 4
    assert prefix_agreement(["a", "b", "c", "d", "e"], ["a", "b"]) == 1.0  # longer but agreeing
    assert prefix_agreement([], []) == 1.0 and prefix_agreement(["a"], []) == 0.0


def test_choice_logprobs_longest_prefix_and_floor():
    top = [[" Paris", -0.25], [" the", -2.8], [" Lon", -4.3]]
    lp = choice_logprobs([" Paris", " London", " Berlin"], top)
    assert lp[0] == -0.25 and lp[1] == -4.3
    assert lp[2] == pytest.approx(-5.3)  # unlisted: one nat below the lowest listed
    p = Probe("c", "choice", "The capital of France is", choices=(" Paris", " London", " Berlin"), answer=0)
    it = score_item(p, " Paris.", [[" Paris", -0.25, top]])
    assert it.method == "logprob" and it.score == 1.0 and it.loglik == -0.25
    wrong = score_item(Probe("c", "choice", "x", choices=(" Berlin", " Paris"), answer=0), " Paris", [[" Paris", -0.25, top]])
    assert wrong.score == 0.0  # Berlin unlisted loses to Paris
    # no logprobs: the greedy answer must start with the gold choice
    assert score_item(p, " Paris is big", None).method == "greedy-text"
    assert score_item(p, " Paris is big", None).score == 1.0 and score_item(p, " London", None).score == 0.0


def test_generate_item_score_is_rouge_l_of_the_cut_answer():
    p = Probe("d", "generate", "Monday, Tuesday, Wednesday,", reference="Thursday, Friday, Saturday, Sunday")
    it = score_item(p, " and Thursday) to create", None)
    # cut to 4 words: "and thursday to create" vs "thursday friday saturday sunday": LCS 1, P = R = 1/4
    assert it.score == pytest.approx(0.25) and not it.exact
    assert score_item(p, None, None, "HTTP 500").method == "unanswered"


def test_broken_reasons_on_known_answers():
    def items(texts):
        p = Probe("g", "generate", "x", reference="alpha beta")
        return [score_item(p, t, None) for t in texts]

    assert any("empty" in r for r in broken_reasons(items([""] * 4), [8] * 4, [8] * 4, 0.0))
    assert any("repeated" in r for r in broken_reasons(items([" tk tk tk tk tk tk tk"] * 4), [7] * 4, [8] * 4, 0.0))
    assert any("not text" in r for r in broken_reasons(items(["\x00\ufffd\x07" * 3] * 4), [3] * 4, [8] * 4, 0.0))
    assert any("wrong length" in r for r in broken_reasons(items(["alpha beta"] * 1), [40], [8], 1.0))
    assert any("unrelated" in r for r in broken_reasons(items([" zorp quux", " blen vask", " drim oolt", " fesk"]), [2] * 4, [8] * 4, 0.0))
    real = items([" six, seven", " May, and June.", " G, H, I", " window"])
    assert broken_reasons(real, [3, 4, 4, 1], [8] * 4, 0.6) == []


def test_sign_flip_test_exact_values():
    assert sign_flip_p([1, 1, 1]) == 0.25  # 2 of the 8 sign patterns are as extreme
    assert sign_flip_p([0.5] * 10) == pytest.approx(2 / 1024)
    assert sign_flip_p([0, 0]) == 1.0
    t = paired({str(i): 1.0 for i in range(20)}, {str(i): 1.0 if i else 0.0 for i in range(20)})
    assert t["verdict"] == "not significant" and t["p"] == 1.0  # one probe moved: no evidence
    t = paired({str(i): 1.0 for i in range(20)}, {str(i): 0.0 for i in range(20)})
    assert t["verdict"] == "significant" and t["p"] < 1e-5


# ---- probe sets ---------------------------------------------------------------------------------------------

def test_shipped_probe_set_is_valid():
    ps = load_probe_set()
    assert len(ps.probes) >= 16 and {p.kind for p in ps.probes} == {"generate", "choice"}


@pytest.mark.parametrize("line, msg", [
    ("{not json", "line 1: not valid JSON"),
    ('["a"]', "line 1: each line must be a JSON object"),
    ('{"id": "a", "kind": "generate", "prompt": "x"}', "line 1: a 'generate' probe needs a non-empty 'reference'"),
    ('{"id": "a", "kind": "choice", "prompt": "x", "choices": ["a", "b"], "answer": 2}', "'answer' must be an index"),
    ('{"id": "a", "kind": "cloze", "prompt": "x"}', "line 1: kind"),
    ('{"id": "a", "kind": "generate", "prompt": "x", "reference": "y", "colour": 1}', "line 1: colour"),
])
def test_bad_probe_sets_are_one_line_errors(tmp_path, line, msg):
    f = tmp_path / "set.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(QualityError, match=msg.replace("(", r"\(")) as e:
        load_probe_set(f)
    assert "\n" not in str(e.value)
    f.write_text('{"id": "a", "kind": "generate", "prompt": "x", "reference": "y"}\n' * 2)
    with pytest.raises(QualityError, match="line 2: duplicate id 'a'"):
        load_probe_set(f)
    with pytest.raises(QualityError, match="file not found"):
        load_probe_set(tmp_path / "missing.jsonl")


# ---- a broken server, for real: the mock's garbage modes --------------------------------------------------

@pytest.mark.parametrize("garbage, reason", [("random", "unrelated to the prompts"), ("empty", "are empty"),
                                             ("bytes", "not text"), ("none", "repeated")])
def test_garbage_server_is_quality_invalid(server, tmp_path, garbage, reason):
    server.configure(garbage=garbage, ttft_ms=2, itl_ms=1)
    r = run(spec(server, tmp_path, requests=6, concurrency=[3], quality=True))
    pb = r.summary["phasebench"]
    assert not r.valid and not pb["quality"]["valid"]
    assert any(reason in x for x in pb["reasons"]), pb["reasons"]
    # the speed figures are the load's alone: 6 requests in requests.jsonl, the 20 probes in quality.jsonl
    assert r.summary["completed"] == 6 and pb["quality"]["in_speed_metrics"] is False
    lines = (tmp_path / "run" / "quality.jsonl").read_text().splitlines()
    assert len(lines) == pb["quality"]["probes"] == 20
    assert all(json.loads(x)["probe"] for x in lines)
    assert not any(json.loads(x).get("probe") for x in (tmp_path / "run" / "requests.jsonl").read_text().splitlines())


def test_probes_mixed_into_an_open_loop_and_alone(server, tmp_path):
    server.configure(garbage="random", ttft_ms=2, itl_ms=1)
    r = run(spec(server, tmp_path, scenario="server", rate=[200.0], requests=10, quality_alone=True))
    q = r.summary["phasebench"]["quality"]
    assert r.summary["completed"] == 10 and q["answered"] == 20 and q["alone"]["score"] is not None
    assert len((tmp_path / "run" / "quality-alone.jsonl").read_text().splitlines()) == 20
    warm = r.summary["phasebench"]["warmup"]["requests"]  # the connection warm-up, sent but not recorded
    assert server.stats()["count"] == 10 + 20 + 20 + warm


def test_reference_agreement_and_threshold(server, tmp_path):
    server.configure(garbage="random", ttft_ms=2, itl_ms=1, seed=3)
    first = run(spec(server, tmp_path, requests=2, concurrency=[1], quality=True, out=tmp_path / "a"))
    ref = tmp_path / "ref.json"
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "quality", "reference", str(first.path), "-o", str(ref)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(ref.read_text())["kind"] == "phasebench-quality-reference"
    server.configure(garbage="random", ttft_ms=2, itl_ms=1, seed=3)  # same seed, one slot: the same answers
    again = run(spec(server, tmp_path, requests=2, concurrency=[1], quality_ref=ref, out=tmp_path / "b"))
    ag = again.summary["phasebench"]["quality"]["reference"]
    assert ag["compared"] == 20 and ag["exact_match"] == 1.0 and ag["token_agreement"] == 1.0 and ag["rouge_l"] == 1.0
    assert ag["passed"]  # 0 >= 0.99 x 0: agreeing with a garbage reference passes the threshold (the health check does not)
    # a reference with a real score the garbage cannot reach: the threshold fails, with the reason
    d = json.loads(ref.read_text())
    d["score"] = 0.8
    good = tmp_path / "good.json"
    good.write_text(json.dumps(d))
    low = run(spec(server, tmp_path, requests=2, concurrency=[1], quality_ref=good, quality_threshold=0.9, out=tmp_path / "c"))
    reasons = low.summary["phasebench"]["reasons"]
    assert any("below 90% of the reference's 0.800" in x for x in reasons), reasons
    # compare shows quality beside speed, with the paired test's verdict
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "compare", str(first.path), str(again.path), "--json"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = {r["metric"]: r for r in json.loads(p.stdout)["rows"]}
    assert rows["quality score"]["verdicts"][1] == "not significant"
    assert rows["quality score"]["values"][0] == rows["quality score"]["values"][1]


@pytest.mark.slow
def test_cli_quality_errors_are_one_line(server, tmp_path):
    bad = tmp_path / "set.jsonl"
    bad.write_text('{"id": "x", "kind": "choice", "prompt": "p", "choices": ["a"], "answer": 0}\n')
    for args, msg in ((["--quality-set", str(bad)], "line 1: a 'choice' probe needs"),
                      (["--quality-ref", str(tmp_path / "nope.json")], "--quality-ref"),
                      (["--quality", "--quality-threshold", "1.5"], "--quality-threshold")):
        p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--url", server.url, "--requests", "2",
                            "--out", str(tmp_path / "r"), *args], capture_output=True, text=True, env=ENV, timeout=60)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "quality", "reference", str(tmp_path), "-o", "x.json"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_cli_run_garbage_exits_invalid_with_reason(server, tmp_path):
    server.configure(garbage="random", ttft_ms=2, itl_ms=1)
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "run", "--url", server.url, "--requests", "3",
                        "--input-tokens", "8", "--output-tokens", "4", "--quality", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "unrelated to the prompts" in p.stdout
    s = Run.load(tmp_path / "r")
    assert s.summary["phasebench"]["quality"]["score"] < 0.1


def test_logprobs_from_both_wire_formats():
    from phasebench.client.openai import parse_event

    # llama.cpp (as its server sent it here) and OpenAI chat: "content" entries with top_logprobs lists
    cpp = parse_event(json.dumps({"choices": [{"text": " Paris", "index": 0, "finish_reason": None, "logprobs": {"content": [
        {"id": 7042, "token": " Paris", "logprob": -0.248, "top_logprobs": [{"token": " Paris", "logprob": -0.248},
                                                                          {"token": " the", "logprob": -2.78}]}]}}]}).encode())
    assert cpp.text == " Paris" and cpp.logprobs == [[" Paris", -0.248, [[" Paris", -0.248], [" the", -2.78]]]]
    # OpenAI legacy completions and vLLM: parallel lists, top_logprobs as {token: logprob}
    legacy = parse_event(json.dumps({"choices": [{"text": " Paris", "index": 0, "logprobs": {
        "tokens": [" Paris"], "token_logprobs": [-0.3], "top_logprobs": [{" Paris": -0.3, " Lyon": -3.1}],
        "text_offset": [0]}}]}).encode())
    assert legacy.logprobs == [[" Paris", -0.3, [[" Paris", -0.3], [" Lyon", -3.1]]]]
    assert parse_event(b'{"choices": [{"text": "x", "logprobs": null}]}').logprobs is None

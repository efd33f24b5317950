"""The hardware catalog (data/hardware.yaml): every record complete and plausible, aliases resolve (and clash
loudly), and the devices added for other hardware predict on llama-2-7b."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import phasebench
from phasebench import yamlio
from phasebench.model.engines import default_engine, device_class, profile
from phasebench.model.errors import ModelError
from phasebench.model.hardware import _builtin, _from_record, alias_map, load_hardware, resolve_key
from phasebench.spec import SpecError, check_hardware

from .conftest import ENV

CAT = _builtin()

NEW = ["b200", "h20", "l40", "a10g", "a10", "t4", "v100-sxm-32gb", "rtx-a6000", "rtx-3090", "a100-80gb-pcie",
       "mi325x", "mi210", "tpu-v5p", "tpu-v6e", "m1-max", "m2-ultra", "m3-max", "m4-max"]
APPLE = ["m1-max", "m2-ultra", "m3-max", "m4-max"]

# (memory GB/s, 16-bit-or-best TFLOP/s) a device of each kind plausibly has: catches a unit slip (TB/s for GB/s,
# a sparse figure for a dense one would still pass; the per-device checks below look at those)
# GPUs from a base Apple M1 (68 GB/s, 2.6 TFLOPS) to a B200: wide enough for every real part, narrow enough to
# catch a unit slip (TB/s for GB/s, GFLOPS for TFLOPS)
RANGES = {"gpu": ((50, 10_000), (2, 3_000)), "tpu": ((500, 8_000), (100, 3_000)),
          "accelerator": ((500, 8_000), (100, 3_000)), "sram-dataflow": ((1_000, 1e7), (100, 1e5)),
          "cpu": ((50, 1_500), (0.5, 500))}


def _half(h) -> float:
    t = h.tflops
    return t.get("bf16") or t.get("fp16") or max(t.values())


def test_every_record_loads_and_is_under_its_key():
    raw = yamlio.safe_load((Path(phasebench.__file__).parent / "data" / "hardware.yaml").read_text())
    assert set(raw) == set(CAT) and len(CAT) >= 40
    for k, rec in raw.items():
        h = _from_record(k, rec)
        assert h.key == k and load_hardware(k) is CAT[k]


@pytest.mark.parametrize("key", sorted(CAT))
def test_every_record_has_its_sources_and_the_fields_the_model_needs(key):
    h = CAT[key]
    assert h.source and h.price_source, key
    assert re.fullmatch(r"\d{4}-\d{2}", str(h.date)), (key, h.date)
    assert h.kind and h.name and h.memory_gb > 0 and h.memory_gbps > 0 and h.tflops, key
    if h.kind == "gpu":        # the per-generation factors are keyed by arch; TPUs, accelerators and CPUs fall back to the key
        assert h.extra.get("arch"), key
    # a power figure, or a sentence saying why there is none
    assert (h.tdp_w and h.tdp_w > 0) or h.extra.get("power_source"), key
    if h.price_per_hour is not None:
        assert 0 < h.price_per_hour < 100 or h.chips > 1, key
    assert all(v > 0 for v in h.tflops.values()), key


@pytest.mark.parametrize("key", sorted(CAT))
def test_bandwidth_and_flops_in_plausible_ranges_per_kind(key):
    h = CAT[key]
    (bw_lo, bw_hi), (fl_lo, fl_hi) = RANGES[h.kind]
    per_chip_bw, per_chip_fl = h.memory_gbps / h.chips, _half(h) / h.chips
    assert bw_lo <= per_chip_bw <= bw_hi, (key, h.memory_gbps)
    assert fl_lo <= per_chip_fl <= fl_hi, (key, _half(h))
    t = h.tflops
    if t.get("fp32") and h.kind != "cpu":
        assert t["fp32"] <= _half(h) * 1.0001, key                 # 16-bit is never slower than fp32
    for low in ("fp8", "int8"):
        if t.get(low) and (t.get("bf16") or t.get("fp16")):
            assert t[low] >= _half(h) * 0.999, (key, low)          # 8-bit is never slower than 16-bit
    if h.kind == "gpu":
        # ridge point (FLOP per byte at 16 bit): dense figures put every GPU between ~35 (H20, Apple silicon) and ~400 (L4)
        assert 10 < h.ridge_point("fp16") < 700, (key, h.ridge_point("fp16"))


def test_new_devices_datasheet_figures():
    b200, a10g, a10 = CAT["b200"], CAT["a10g"], CAT["a10"]
    # dense = half NVIDIA's sparse 4.5 PF; and the A10G is not an A10 in tensor throughput
    assert b200.tflops["bf16"] == 2250 and b200.tflops["fp8"] == 4500 and b200.extra["arch"] == "blackwell"
    assert a10g.tflops["bf16"] < a10.tflops["bf16"] and a10g.memory_gbps == a10.memory_gbps == 600
    assert CAT["mi210"].extra["arch"] == CAT["mi250"].extra["arch"] == "cdna2"
    assert CAT["mi325x"].extra["arch"] == CAT["mi300x"].extra["arch"] == "cdna3"
    assert CAT["t4"].extra["arch"] == "turing" and CAT["v100-sxm-32gb"].extra["arch"] == "volta"
    assert "bf16" not in CAT["t4"].tflops and CAT["t4"].peak_flops("bf16") == 65e12      # fp16 stands in
    assert (CAT["tpu-v5p"].kind, CAT["tpu-v6e"].kind) == ("tpu", "tpu")
    assert [CAT[k].memory_gbps for k in APPLE] == [400, 800, 400, 546]


# --- aliases ----------------------------------------------------------------------------------------------------
ALIASES = [(a, k) for k, h in CAT.items() for a in h.extra.get("aliases", [])]


@pytest.mark.parametrize("alias,key", ALIASES)
def test_every_alias_resolves_to_its_record(alias, key):
    for spelling in (alias, alias.upper(), alias.replace("-", "_"), alias.replace("-", " ")):
        h = load_hardware(spelling)
        assert h.key == key and h is CAT[key], spelling
        assert resolve_key(spelling) == key


@pytest.mark.parametrize("spelling,key", [
    ("H100-SXM5", "h100-sxm"), ("h100_80gb", "h100-sxm"), ("a100-sxm4-80gb", "a100-80gb-sxm"),
    ("h100-pcie-80gb", "h100-pcie"), ("instinct-mi300x", "mi300x"), ("4090", "rtx-4090"),
    ("RTX4090", "rtx-4090"), ("gaudi-2", "gaudi2"), ("HL-225", "gaudi2"), ("GroqChip", "groq-lpu"),
    ("lpu", "groq-lpu"), ("v5e", "tpu-v5e"), ("tpu-v5-lite", "tpu-v5e"), ("Trillium", "tpu-v6e"), ("v6e", "tpu-v6e"),
    ("inf2", "inferentia2"), ("RTX A6000", "rtx-a6000"), ("H100 SXM", "h100-sxm"), ("Tesla_T4", "t4"), ("h100sxm", "h100-sxm"),
])
def test_common_spellings(spelling, key):
    assert load_hardware(spelling).key == key


def test_aliases_are_unambiguous():
    keys = set(CAT)
    seen: dict[str, str] = {}
    for a, k in ALIASES:
        assert a not in keys, a
        assert seen.setdefault(a, k) == k, a
    assert not {"dgx-b200", "v100", "a100-pcie", "trainium", "mi300a", "a100", "a100-80gb", "mi300", "groq", "h100"} & set(seen)   # these name more than one part


def _recs(tmp_path, text: str) -> dict:
    p = tmp_path / "hw.yaml"
    p.write_text(text)
    return {k: _from_record(k, v) for k, v in yamlio.safe_load(p.read_text()).items()}


REC = "  name: {n}\n  kind: gpu\n  tflops: {{bf16: 100}}\n  memory_gb: 10\n  memory_gbps: 1000\n"


def test_a_duplicate_alias_fails_loudly(tmp_path):
    recs = _recs(tmp_path, "dev-a:\n" + REC.format(n="A") + "  aliases: [shared, only-a]\n"
                           "dev-b:\n" + REC.format(n="B") + "  aliases: [Shared]\n")
    with pytest.raises(ModelError, match="claimed by both dev-a and dev-b"):
        alias_map(recs)


def test_an_alias_that_is_another_key_fails_loudly(tmp_path):
    recs = _recs(tmp_path, "dev-a:\n" + REC.format(n="A") + "  aliases: [dev_b]\n" "dev-b:\n" + REC.format(n="B"))
    with pytest.raises(ModelError, match="key of another record"):
        alias_map(recs)
    ok = _recs(tmp_path, "dev-a:\n" + REC.format(n="A") + "  aliases: [a-one, A ONE, dev-a]\n")
    assert alias_map(ok) == {"a-one": "dev-a"}


def test_an_unquoted_numeric_alias_is_an_error_not_a_silent_miss(tmp_path):
    recs = _recs(tmp_path, "dev-a:\n" + REC.format(n="A") + "  aliases: [4090]\n")
    with pytest.raises(ModelError, match="must be a string"):
        alias_map(recs)


def test_the_shipped_catalog_passes_the_same_check():
    assert alias_map(CAT) and len(alias_map(CAT)) == len(ALIASES)


def test_unknown_hardware_suggests_by_alias_too():
    with pytest.raises(ModelError, match=r"did you mean tpu-v6e \(trillium\)"):
        load_hardware("trilium")
    with pytest.raises(ModelError, match="did you mean .*h100-sxm"):
        load_hardware("h100-sx")
    assert check_hardware("trillium") == "tpu-v6e" and check_hardware("H100 SXM5") == "h100-sxm"
    assert check_hardware("local") == "local"
    with pytest.raises(SpecError, match="did you mean tpu-v6e"):
        check_hardware("trilium")


def test_to_dict_and_the_cli_show_aliases():
    d = CAT["h100-sxm"].to_dict()
    assert d["key"] == "h100-sxm" and "h100-sxm5" in d["aliases"] and yaml.safe_dump(d)
    env = {**ENV}
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "hardware", "show", "Trillium"], capture_output=True,
                       text=True, env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "tpu-v6e" in p.stdout and "918" in p.stdout and "trillium" in p.stdout
    p = subprocess.run([sys.executable, "-m", "phasebench.cli", "hardware", "list"], capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert p.returncode == 0 and "aliases" in p.stdout and "m4-max" in p.stdout


# --- the new devices predict ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", NEW)
def test_predict_runs_on_each_new_device(key):
    for devices in (1, 2, 4, 8):
        p = phasebench.predict("llama-2-7b", key, devices=devices, batch=1, input_len=512, output_len=128)
        if p.fits:
            break
    assert p.fits, key
    assert math.isfinite(p.ttft_s) and p.ttft_s > 0 and math.isfinite(p.tpot_s) and p.tpot_s > 0, key
    # decode is memory-bound at batch 1: no faster than reading the weights at the datasheet bandwidth
    assert p.tpot_s >= 6.738e9 * 2 / (CAT[key].bandwidth * devices) * 0.99, key


@pytest.mark.parametrize("key", APPLE)
def test_apple_silicon_is_its_own_class_with_llama_cpp(key):
    h = load_hardware(key)
    assert h.kind == "gpu" and h.extra["arch"] == "apple"
    assert device_class(h) == "apple-gpu"                  # not classed as NVIDIA by the key/name guess
    assert default_engine(h) == "llama.cpp" and profile(h).engine == "llama.cpp"
    assert any(n.startswith("engine: llama.cpp") for n in phasebench.predict("llama-2-7b", key).notes)


def test_a_user_record_with_a_clashing_alias_does_not_break_lookups(tmp_path, monkeypatch):
    """One odd file in $PHASEBENCH_HOME/hardware: its clashing aliases are left out, every other name still
    resolves, its own key finds it, and a key that only normalises like a built-in one does not take it over."""
    from phasebench.model.hardware import load_hardware
    from phasebench.spec import check_hardware

    monkeypatch.setenv("PHASEBENCH_HOME", str(tmp_path))
    d = tmp_path / "hardware"
    d.mkdir()
    base = dict(kind="gpu", tflops={"bf16": 100}, memory_gb=80, memory_gbps=2000)
    (d / "my-h100.yaml").write_text(yaml.safe_dump({**base, "name": "mine", "aliases": ["h100-sxm5", "my-card"]}))
    (d / "H100_SXM.yaml").write_text(yaml.safe_dump({**base, "name": "shadow"}))
    assert check_hardware("h100-sxm5") == "h100-sxm" and check_hardware("a100-80gb-sxm") == "a100-80gb-sxm"
    assert load_hardware("my-h100").name == "mine" and load_hardware("my-card").name == "mine"
    assert load_hardware("h100 sxm").key == "h100-sxm" and load_hardware("H100_SXM").name == "shadow"


def test_packaged_catalogs_come_back_from_the_cache_as_they_parse(tmp_path, monkeypatch):
    """yamlio.load_data: the parsed value is cached per file version, read back equal, and neither a damaged
    cache nor an unwritable home changes what a load returns."""
    import os

    monkeypatch.setenv("PHASEBENCH_HOME", str(tmp_path / "home"))
    want = {name: yamlio.safe_load((Path(phasebench.__file__).parent / "data" / name).read_text())
            for name in ("models.yaml", "hardware.yaml", "engines.yaml", "engines_fit.yaml")}
    for name, value in want.items():
        assert yamlio.load_data(name) == value              # parsed, and cached
        files = list((tmp_path / "home" / "cache").glob(f"{name}.*.marshal"))
        assert len(files) == 1, name
        assert yamlio.load_data(name) == value              # from the cache
        files[0].write_bytes(b"\x00not marshal")            # damaged: parsed again, and the cache rewritten
        assert yamlio.load_data(name) == value
        assert yamlio.load_data(name) == value
    assert yamlio.load_data("no-such.yaml") is None
    (tmp_path / "ro").write_text("a file where the home's folder would be")
    monkeypatch.setenv("PHASEBENCH_HOME", str(tmp_path / "ro"))
    assert yamlio.load_data("models.yaml") == want["models.yaml"]   # nothing can be cached: still loads
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "home" / "cache").iterdir())
    assert os.listdir(tmp_path / "home" / "cache")

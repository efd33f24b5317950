"""Warnings when the server saw something other than what was asked, from real runs against the mock."""

from __future__ import annotations

from phasebench.client.openai import Prompt
from phasebench.runner import run
from phasebench.server_checks import context_warning

from .conftest import spec


def _subword_tokenizer_folder(tmp_path):
    """A Hugging Face-style folder whose tokenizer.json splits words into pieces (the mock counts words)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from phasebench.workload.synthetic import WORDS

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    folder = tmp_path / "hf-model"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_prompt_length_the_server_saw_differs(server, tmp_path):
    folder = _subword_tokenizer_folder(tmp_path)
    r = run(spec(server, tmp_path, tokenizer=str(folder), input_tokens=64, requests=3))
    assert r.manifest["tokenizer"].endswith("tokenizer.json")
    w = [x for x in r.summary["phasebench"]["warnings"] if "prompt tokens against the asked-for length" in x]
    assert w and "local tokenizer disagrees" in w[0], r.summary["phasebench"]["warnings"]
    # with the server's own tokenizer the lengths agree and nothing is said
    ok = run(spec(server, tmp_path / "ok", input_tokens=64, requests=3))
    assert not any("asked-for length" in x for x in ok.summary["phasebench"]["warnings"])


def test_server_error_text_is_shown(server, tmp_path):
    server.configure(fault="500", fault_every=2)
    r = run(spec(server, tmp_path, requests=6))
    w = [x for x in r.summary["phasebench"]["warnings"] if x.startswith("server error")]
    assert w == ["server error (3×): HTTP 500: injected internal error"]


def test_context_overflow_is_warned_before_it_bites():
    ps = [Prompt(text="x", input_tokens=2000, output_tokens=100), Prompt(text="y", input_tokens=100, output_tokens=10)]
    w = context_warning(ps, 2048)
    assert w.startswith("1 of 2 prompts") and "2000 in + 100 out" in w
    assert context_warning(ps, None) is None and context_warning(ps, 4096) is None

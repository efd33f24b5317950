"""Completions-endpoint conversations flattened with the model's chat template: the server's (llama-server's
``/apply-template``, which the mock server offers), a local Hugging Face tokenizer folder's, or the plain
role-label fallback, said in the run's warnings. Against the mock server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import pytest

from phasebench.runner import run
from phasebench.spec import SpecError
from phasebench.workload.templates import LocalTemplate, flatten, read_chat_template

from .conftest import spec
from .test_server_checks import _subword_tokenizer_folder

ZEPHYR = ("{% for m in messages %}{% if m['role'] not in ('system', 'user', 'assistant') %}"
          "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
          "{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def _prompts(server) -> list:
    with urllib.request.urlopen(server.root + "/_mock/prompts", timeout=5) as r:
        return json.load(r)


def _render(text: str, messages: list[dict]) -> str:
    return asyncio.run(LocalTemplate(text, {"eos_token": "</s>"}, Path("t")).render(messages, None))


def _conversation_run(server, tmp_path, **kw):
    return run(spec(server, tmp_path, endpoint="completions", turns=3, requests=2, concurrency=[1], input_tokens=20,
                    output_tokens=4, warmup_requests=0, **kw))


def test_the_servers_template_flattens_the_history(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1, tag_answers=True, keep_prompts=True, chat_template="chatml")
    r = _conversation_run(server, tmp_path)
    assert len(r.records) == 6 and all(x.ok for x in r.records)
    assert r.manifest["chat_template"] == {"source": "server"}
    assert not any("role labels" in w or "prefix cache" in w for w in r.summary["phasebench"]["warnings"])
    sent = _prompts(server)
    assert sent[0].startswith("<|im_start|>user\n") and sent[0].endswith("<|im_end|>\n<|im_start|>assistant\n")
    for k in (1, 2, 4, 5):  # conversation 0 is requests 1-3, conversation 1 requests 4-6 (one user at a time)
        prev, cur = sent[k - 1], sent[k]
        # ChatML closes the answer with <|im_end|>; the earlier turn's text and the answer are a prefix
        assert cur.startswith(prev + f" a{k}" + " tk" * 3 + "<|im_end|>\n<|im_start|>user\n")
        assert cur.endswith("<|im_start|>assistant\n") and cur.count("<|im_start|>user") == k % 3 + 1
    assert "User:" not in "".join(sent)


def test_a_local_tokenizer_folders_template_when_the_server_has_none(server, tmp_path):
    folder = _subword_tokenizer_folder(tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": ZEPHYR, "eos_token": {"content": "</s>", "lstrip": False}, "bos_token": "<s>"}))
    server.configure(ttft_ms=2, itl_ms=1, tag_answers=True, keep_prompts=True)
    r = _conversation_run(server, tmp_path, tokenizer=str(folder))
    assert r.manifest["chat_template"]["source"] == f"file:{folder / 'tokenizer_config.json'}"
    assert not any("role labels" in w for w in r.summary["phasebench"]["warnings"])
    sent = _prompts(server)
    assert sent[0].startswith("<|user|>\n") and sent[0].endswith("</s>\n<|assistant|>\n")
    for k in (1, 2, 4, 5):
        assert sent[k].startswith(sent[k - 1] + f" a{k}" + " tk" * 3 + "</s>\n<|user|>\n")


def test_without_a_template_the_plain_fallback_is_used_and_said(server, tmp_path):
    server.configure(ttft_ms=2, itl_ms=1, keep_prompts=True)
    r = _conversation_run(server, tmp_path)
    assert r.manifest["chat_template"]["source"] == "plain" and "/apply-template" in r.manifest["chat_template"]["reason"]
    w = [x for x in r.summary["phasebench"]["warnings"] if "plain role labels" in x]
    assert len(w) == 1 and "not the model's chat template" in w[0]
    assert all(p.startswith("User: ") and p.endswith("\n\nAssistant:") for p in _prompts(server))
    chat = run(spec(server, tmp_path / "chat", endpoint="chat", turns=2, requests=1, warmup_requests=0))
    assert "chat_template" not in chat.manifest  # the chat endpoint: the server applies its own template


def test_local_template_renders_like_apply_chat_template(tmp_path):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": " yes"}, {"role": "user", "content": "more"}]
    assert _render(ZEPHYR, msgs) == ("<|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n yes</s>\n"
                                     "<|user|>\nmore</s>\n<|assistant|>\n")
    from phasebench.workload.templates import TemplateError

    with pytest.raises(TemplateError, match="unknown role tool"):
        _render(ZEPHYR, [{"role": "tool", "content": "x"}])
    # where the template is found: chat_template.jinja first, then the config's (named: the default), then .json
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert read_chat_template(tmp_path / "tokenizer.json")[0] == "D"
    (tmp_path / "chat_template.jinja").write_text("J")
    assert read_chat_template(tmp_path)[0] == "J"
    other = tmp_path / "o"
    other.mkdir()
    assert read_chat_template(other) is None
    (other / "chat_template.json").write_text(json.dumps({"chat_template": "C"}))
    assert read_chat_template(other)[:1] == ("C",)
    assert flatten(msgs[1:3] + msgs[3:]) == "User: hi\n\nAssistant: yes\n\nUser: more\n\nAssistant:"


def test_bad_templates_and_a_missing_jinja2_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="does not parse"):
        LocalTemplate("{% for %}", {}, tmp_path)
    with pytest.raises(SpecError, match="cannot render"):
        LocalTemplate("{{ raise_exception('no system role') }}", {}, tmp_path)
    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setitem(sys.modules, "jinja2.sandbox", None)
    with pytest.raises(SpecError, match=r"needs the 'jinja2' package: pip install 'phasebench\[tokenizers\]'"):
        LocalTemplate(ZEPHYR, {}, tmp_path)

"""Chat templates: how a multi-turn conversation becomes one prompt text for the completions endpoint.

Three sources, tried in this order by :func:`choose_template`:

- **the server's**: llama.cpp's ``llama-server`` answers ``POST /apply-template`` ``{"messages": [...]}`` with
  ``{"prompt": ...}``: the model's own template (with the generation prompt), as ``/v1/chat/completions``
  would apply it;
- **a local Hugging Face tokenizer's** (``--tokenizer FOLDER`` or its ``tokenizer.json``): the folder's
  ``chat_template.jinja``, ``tokenizer_config.json``'s ``chat_template`` or ``chat_template.json``, rendered
  with Jinja2 as ``transformers``' ``apply_chat_template`` renders it (sandboxed, ``trim_blocks``,
  ``lstrip_blocks``, ``raise_exception``, ``tojson``, ``strftime_now``, the special tokens of the config);
- **plain**: role labels, ``System: …\\n\\nUser: …\\n\\nAssistant:<answer>\\n\\nUser: …\\n\\nAssistant:`` (not the
  model's template; the run's warnings say it was used).

Each keeps a later turn's text an extension of the earlier turn's text and its answer (up to the tokens a
template puts after an answer), so a server's prefix cache can serve the history.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ..spec import SpecError

ROLE_LABEL = {"system": "System", "user": "User", "assistant": "Assistant"}
PROBE = [{"role": "user", "content": "hello"}]


class TemplateError(RuntimeError):
    """The template could not render a conversation (the server refused, the template raised)."""


class ChatTemplate(Protocol):
    source: str  # "server", "file:<path>", "plain"
    failures: list[str]  # turns it could not render during the run (each ended its conversation)

    async def render(self, messages: list[dict[str, str]], session: aiohttp.ClientSession) -> str: ...


def flatten(history: list[dict[str, str]]) -> str:
    """``System: …\\n\\nUser: …\\n\\nAssistant:<answer>\\n\\nUser: …\\n\\nAssistant:`` — turn k+1's text starts with
    turn k's text followed by its answer, byte for byte."""
    parts = []
    for m in history:
        label = ROLE_LABEL.get(m["role"], m["role"].capitalize())
        parts.append(f"{label}:{m['content']}" if m["role"] == "assistant" else f"{label}: {m['content']}\n\n")
        if m["role"] == "assistant":
            parts.append("\n\n")
    return "".join(parts) + "Assistant:"


class PlainTemplate:
    """The fallback: role labels (:func:`flatten`), with the reason no model template was found."""

    source = "plain"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.failures: list[str] = []

    async def render(self, messages: list[dict[str, str]], session: aiohttp.ClientSession) -> str:
        return flatten(messages)


class ServerTemplate:
    """The server's own template over HTTP (llama.cpp's ``POST /apply-template``)."""

    source = "server"

    def __init__(self, root_url: str, headers: dict[str, str] | None = None) -> None:
        self.url = root_url.rstrip("/") + "/apply-template"
        self.headers = headers or {}
        self.failures: list[str] = []

    async def render(self, messages: list[dict[str, str]], session: aiohttp.ClientSession) -> str:
        try:
            async with session.post(self.url, json={"messages": messages}, headers=self.headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status != 200:
                    raise TemplateError(f"/apply-template answered HTTP {r.status}")
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise TemplateError(f"/apply-template failed: {type(e).__name__} {e}".strip()) from None
        prompt = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(prompt, str):
            raise TemplateError("/apply-template answered without a 'prompt' string")
        return prompt

    async def probe(self, session: aiohttp.ClientSession) -> bool:
        try:
            return "hello" in await self.render(PROBE, session)
        except TemplateError:
            return False


class LocalTemplate:
    """A Hugging Face tokenizer folder's chat template, rendered with Jinja2 like ``apply_chat_template``."""

    def __init__(self, template: str, special: dict[str, str], path: Path) -> None:
        try:
            from jinja2 import TemplateError as JinjaError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise SpecError(f"the chat template in {path} needs the 'jinja2' package: "
                            "pip install 'phasebench[tokenizers]' (or use --endpoint chat)") from None
        self._jinja_error = JinjaError
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: dt.datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(template)
        except JinjaError as e:
            raise SpecError(f"the chat template in {path} does not parse: {e}") from None
        self.special = special
        self.source = f"file:{path}"
        self.failures: list[str] = []
        try:
            self._render(PROBE)
        except TemplateError as e:
            raise SpecError(f"the chat template in {path} cannot render a conversation: {e}") from None

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._template.render(messages=messages, add_generation_prompt=True, **self.special)
        except (self._jinja_error, TemplateError, TypeError, ValueError) as e:
            raise TemplateError(str(e)) from None

    async def render(self, messages: list[dict[str, str]], session: aiohttp.ClientSession) -> str:
        return self._render(messages)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _token(v: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or an AddedToken object."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def read_chat_template(path: str | Path) -> tuple[str, dict[str, str], Path] | None:
    """(template, special tokens, the file it came from) of a tokenizer folder or its ``tokenizer.json``;
    None when the folder has no chat template."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    config: dict[str, Any] = {}
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            loaded = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SpecError(f"cannot read {cfg_path}: {e}") from None
        config = loaded if isinstance(loaded, dict) else {}
    special = {k: t for k in ("bos_token", "eos_token", "unk_token", "pad_token")
               if (t := _token(config.get(k))) is not None}
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), special, jinja
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default", next(iter(named.values()), None))
    if isinstance(tpl, str):
        return tpl, special, cfg_path
    js = folder / "chat_template.json"
    if js.is_file():
        try:
            tpl = json.loads(js.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError) as e:
            raise SpecError(f"cannot read {js}: {e}") from None
        if isinstance(tpl, str):
            return tpl, special, js
    return None


async def choose_template(tokenizer: str | None, session: aiohttp.ClientSession, root_url: str,
                          headers: dict[str, str] | None = None) -> ChatTemplate:
    """The server's template if it offers one, else the local tokenizer folder's, else plain role labels."""
    server = ServerTemplate(root_url, headers)
    if await server.probe(session):
        return server
    if tokenizer and tokenizer not in ("server", "approx"):
        found = read_chat_template(tokenizer)
        if found is not None:
            return LocalTemplate(*found)
        return PlainTemplate(f"the server has no /apply-template and {tokenizer} holds no chat template")
    return PlainTemplate("the server has no /apply-template and no --tokenizer folder with a chat template was given")


def describe(template: ChatTemplate) -> dict[str, Any]:
    """The manifest's ``chat_template`` block."""
    d: dict[str, Any] = {"source": template.source}
    if isinstance(template, PlainTemplate):
        d["reason"] = template.reason
    return d


def warnings_for(template: ChatTemplate | None) -> list[str]:
    """The run's warnings: the plain fallback was used; turns the template could not render."""
    out = []
    if isinstance(template, PlainTemplate):
        out.append("completions history flattened with plain role labels, not the model's chat template "
                   f"({template.reason})")
    if template is not None and template.failures:
        out.append(f"the chat template ({template.source}) failed on {len(template.failures)} turn(s), each ending "
                   f"its conversation: {template.failures[0]}")
    return out

"""Counting tokens: a local ``tokenizer.json`` (``tokenizers``), the server's ``/tokenize``, or an estimate.

The server's tokenizer is the ground truth for exact prompt lengths: llama.cpp answers ``POST /tokenize``
``{"content": ...}`` and ``POST /detokenize`` ``{"tokens": [...]}``; vLLM and SGLang answer ``/tokenize`` with
``{"prompt": ...}`` (at the server root, not under ``/v1``).
"""

from __future__ import annotations

import re
from typing import Protocol

import aiohttp

from ..spec import SpecError


class Tokenizer(Protocol):
    name: str
    exact: bool

    async def encode(self, text: str) -> list[int]: ...

    async def decode(self, ids: list[int]) -> str: ...


class ApproxTokenizer:
    """No tokenizer at hand: one token per word-or-punctuation piece. Lengths are then corrected and reported
    from the server's ``usage.prompt_tokens``."""

    name = "approx"
    exact = False
    _re = re.compile(r"\w+|[^\w\s]")

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._inv: list[str] = []

    async def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._re.findall(text):
            i = self._vocab.get(piece)
            if i is None:
                i = self._vocab[piece] = len(self._inv)
                self._inv.append(piece)
            ids.append(i)
        return ids

    async def decode(self, ids: list[int]) -> str:
        return " ".join(self._inv[i] for i in ids)


class HFTokenizer:
    """A local ``tokenizer.json`` file, or a Hugging Face model folder holding one, read with the
    ``tokenizers`` library (extra: ``phasebench[tokenizers]``)."""

    exact = True

    def __init__(self, path: str) -> None:
        from pathlib import Path

        if Path(path).is_dir():
            if not (Path(path) / "tokenizer.json").is_file():
                raise SpecError(f"--tokenizer {path}: the folder has no tokenizer.json")
            path = str(Path(path) / "tokenizer.json")
        try:
            from tokenizers import Tokenizer as _T
        except ImportError:
            raise SpecError("--tokenizer FILE needs the 'tokenizers' package: pip install 'phasebench[tokenizers]'") from None
        try:
            self._tok = _T.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception for bad files
            raise SpecError(f"cannot load tokenizer {path}: {e}") from None
        self.name = f"file:{path}"

    async def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    async def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


class ServerTokenizer:
    """The server's own tokenizer over HTTP (llama.cpp style, with vLLM's request shape as a fallback)."""

    exact = True
    name = "server"

    def __init__(self, root_url: str, session: aiohttp.ClientSession, model: str | None = None) -> None:
        self.root = root_url.rstrip("/")
        self.session = session
        self.model = model
        self._style: str | None = None

    async def probe(self) -> bool:
        try:
            await self.encode("hello world")
            return True
        except (aiohttp.ClientError, ValueError, KeyError, TimeoutError):
            return False

    async def encode(self, text: str) -> list[int]:
        if self._style in (None, "llamacpp"):
            async with self.session.post(self.root + "/tokenize", json={"content": text, "add_special": False}) as r:
                if r.status == 200:
                    data = await r.json(content_type=None)
                    if isinstance(data, dict) and "tokens" in data:
                        self._style = "llamacpp"
                        return [t if isinstance(t, int) else t["id"] for t in data["tokens"]]
                if self._style == "llamacpp":
                    raise ValueError(f"/tokenize answered {r.status}")
        async with self.session.post(
            self.root + "/tokenize", json={"prompt": text, "model": self.model, "add_special_tokens": False}
        ) as r:
            if r.status != 200:
                raise ValueError(f"/tokenize answered {r.status}")
            data = await r.json(content_type=None)
            self._style = "vllm"
            return list(data["tokens"])

    async def decode(self, ids: list[int]) -> str:
        body = {"tokens": ids} if self._style != "vllm" else {"tokens": ids, "model": self.model}
        async with self.session.post(self.root + "/detokenize", json=body) as r:
            if r.status != 200:
                raise ValueError(f"/detokenize answered {r.status}")
            data = await r.json(content_type=None)
            return data.get("content", data.get("prompt", ""))


def server_root(base_url: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p`` (tokenize endpoints live at the root)."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))

"""Model architectures: the catalog (``data/models.yaml``), Hugging Face ``config.json`` files and GGUF files.

A :class:`ModelArch` knows its shape; parameter counts, weight bytes and KV-cache bytes are derived from it
(formulas in docs/model.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from .. import yamlio
from .errors import ModelError, unknown

BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

# GGUF (llama.cpp) weight storage formats: bytes per weight, scales included. Block formats from ggml's
# block structs: Q8_0 = fp16 scale + 32 int8 (34 B / 32 weights), Q5_0 = scale + 32 5-bit (22 B / 32),
# Q4_1 = scale + min + 32 nibbles (20 B / 32), Q4_0 = scale + 32 nibbles (18 B / 32), Q6_K = 210 B / 256.
# The _K_M "mixes" keep some tensors (half the layers' attn_v and ffn_down, the output matrix) at Q6_K, so
# their average is a file's size over its parameters: llama.cpp's quantize table for Llama-3-8B
# (Q4_K_M 4.58 GiB, Q5_K_M 5.33 GiB over 8.03 B parameters) gives 4.90 and 5.70 bits; Llama-2-7B's
# Q4_K_M file (3.80 GiB over 6.74 B) gives 4.84. 4.85 and 5.69 are taken. Storage only: a GGUF format
# is never a compute precision (llama.cpp dequantizes to fp16/fp32 or multiplies in int8 with fp scales).
GGUF_BYTES = {"q8_0": 34 / 32, "q6_k": 210 / 256, "q5_k_m": 5.69 / 8, "q5_0": 22 / 32, "q4_1": 20 / 32,
              "q4_k_m": 4.85 / 8, "q4_0": 18 / 32}
BYTES.update(GGUF_BYTES)
STORAGE_ONLY = frozenset({"int4", "native", *GGUF_BYTES})  # weight storage formats no device computes in


def precision_bytes(p: str) -> float:
    try:
        return BYTES[p]
    except KeyError:
        raise ModelError(f"unknown precision {p!r} (known: {', '.join(BYTES)})") from None


@dataclass(frozen=True)
class ModelArch:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    head_dim: int = 0                 # 0: hidden / heads
    ffn_kind: str = "gated"           # gated (3 matrices) | mlp (2)
    tied: bool = False
    experts: int = 1
    experts_active: int = 1
    bias: str = "none"                # none | qkv | mlp | all
    lm_head_bias: bool = False
    norm: str = "rms"                 # rms | layer
    norms_per_layer: int = 2
    sliding_window: int = 0
    local_layers: int = 0
    context: int = 0
    published_params: float | None = None         # billions
    published_active_params: float | None = None
    source: str = ""
    weight_bytes_actual: int = 0      # a quantized file's real size (GGUF), used instead of params x bytes
    weight_format: str = ""           # e.g. GGUF Q4_1

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    # --- shape -------------------------------------------------------------------------------------------
    @property
    def attention_kind(self) -> str:
        if self.kv_heads == 1:
            return "MQA"
        return "MHA" if self.kv_heads == self.heads else "GQA"

    @cached_property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @cached_property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    # --- parameters --------------------------------------------------------------------------------------
    def _attn_params(self) -> int:
        h = self.hidden
        n = 2 * h * self.q_dim + 2 * h * self.kv_dim
        if self.bias in ("qkv", "all"):
            n += self.q_dim + 2 * self.kv_dim
        if self.bias == "all":
            n += h
        return n

    def _expert_params(self) -> int:
        n = (3 if self.ffn_kind == "gated" else 2) * self.hidden * self.ffn
        if self.bias in ("mlp", "all"):
            n += self.ffn + self.hidden
        return n

    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layer" else 1)

    @cached_property
    def dense_layer_params(self) -> int:
        """Per layer, everything but the experts: attention, norms, router."""
        router = self.hidden * self.experts if self.experts > 1 else 0
        return self._attn_params() + self.norms_per_layer * self._norm_params() + router

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @cached_property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden + (self.vocab if self.lm_head_bias else 0)

    @cached_property
    def params(self) -> int:
        """Stored parameters: every expert, embeddings once if tied, twice if not."""
        per_layer = self.dense_layer_params + self.experts * self._expert_params()
        emb = self.embedding_params + (0 if self.tied else self.lm_head_params) + (self.vocab if self.lm_head_bias and self.tied else 0)
        return self.layers * per_layer + emb + self._norm_params()

    @cached_property
    def active_params(self) -> int:
        """Parameters one token touches: top-k experts only."""
        return self.params - self.layers * (self.experts - self.experts_active) * self._expert_params()

    @cached_property
    def compute_params(self) -> int:
        """Parameters that take part in matrix products for one token (no embedding lookup): 2 FLOPs each."""
        return self.layers * (self.dense_layer_params + self.experts_active * self._expert_params()) + self.lm_head_params

    # --- bytes -------------------------------------------------------------------------------------------
    def weight_bytes(self, precision: str) -> float:
        """Bytes of stored weights: the file's size for GGUF, else params x bytes per element."""
        if precision == "native" and self.weight_bytes_actual:
            return float(self.weight_bytes_actual)
        return self.params * precision_bytes("fp16" if precision == "native" else precision)

    def expert_bytes_fraction(self) -> float:
        """Fraction of the weights that are expert FFNs (0 for dense models)."""
        if self.experts <= 1:
            return 0.0
        return self.layers * self.experts * self._expert_params() / self.params

    def kv_bytes_per_token(self, kv_precision: str = "fp16") -> float:
        """KV cache per token of context, all layers: 2 (K and V) · L · n_kv · d · bytes."""
        return 2 * self.layers * self.kv_dim * precision_bytes(kv_precision)

    def kv_bytes(self, context: float, kv_precision: str = "fp16") -> float:
        """KV bytes held for one sequence at ``context`` tokens (sliding-window layers cap at the window)."""
        per_layer_token = 2 * self.kv_dim * precision_bytes(kv_precision)
        local = self.local_layers if self.sliding_window else 0
        return per_layer_token * ((self.layers - local) * context + local * min(context, self.sliding_window or context))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "layers": self.layers, "hidden": self.hidden, "heads": self.heads,
            "kv_heads": self.kv_heads, "head_dim": self.head_dim, "ffn": self.ffn, "ffn_kind": self.ffn_kind,
            "vocab": self.vocab, "tied_embeddings": self.tied, "experts": self.experts,
            "experts_active": self.experts_active, "attention": self.attention_kind,
            "sliding_window": self.sliding_window or None, "params": self.params, "active_params": self.active_params,
            "published_params_b": self.published_params, "weight_format": self.weight_format or None,
            "weight_bytes_actual": self.weight_bytes_actual or None, "source": self.source,
        }


# --- loaders ---------------------------------------------------------------------------------------------
_FIELDS = {f for f in ModelArch.__dataclass_fields__}


@cache
def catalog() -> dict[str, ModelArch]:
    raw = yamlio.load_data("models.yaml")
    out = {}
    for name, rec in raw.items():
        hf = rec.pop("hf", "")
        out[name] = ModelArch(name=name, source=f"https://huggingface.co/{hf}/blob/main/config.json", **rec)
    return out


def load_model(ref: str) -> ModelArch:
    """A catalog name, a Hugging Face config.json (or a folder holding one), or a .gguf file."""
    p = Path(ref).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        p = p / "config.json"
    if p.suffix == ".gguf" and p.exists():
        return from_gguf(p)
    if p.suffix == ".json" and p.exists():
        return from_hf_config(p)
    cat = catalog()
    local = ref.startswith((".", "/", "~")) or p.exists() or p.suffix in (".gguf", ".json") or ref.count("/") > 1
    key = None if local else catalog_key(ref)
    if key is not None:
        return cat[key]
    if local:
        raise ModelError(f"model file not found: {ref} (a path is read as a file or folder, never matched to the "
                         "catalog by its name: its architecture may differ)")
    if "/" in ref:
        raise ModelError(f"model {ref!r}: not the Hugging Face id of a catalog model ({', '.join(sorted(cat))}), "
                         "nor a variant of one; for another model pass its config.json (or a folder or .gguf file)")
    raise unknown("model", ref, cat)


# variant words a Hugging Face name adds to the base model's without changing its architecture: chat and
# instruct tunes, the "-hf" conversions. Not dropped: a release ("-v0.2": Mistral's v0.2 has no sliding window),
# a context length ("-128k": another RoPE and context), a quantization ("-awq", "-fp8": other weight bytes).
_VARIANT_WORDS = {"instruct", "chat", "hf", "it", "base"}


def _name_form(name: str) -> str:
    """A model name as compared: the last path part, lower case, ``_``/space as ``-``, without ``Meta-`` and the
    variant words (anywhere: ``Mixtral-8x7B-Instruct-v0.1`` → ``mixtral-8x7b-v0.1``)."""
    base = name.strip().lower().rsplit("/", 1)[-1].replace("_", "-").replace(" ", "-").removeprefix("meta-")
    return "-".join(t for t in base.split("-") if t not in _VARIANT_WORDS)


def catalog_key(ref: str) -> str | None:
    """The catalog key a model reference names: the key itself (any case), the Hugging Face id in the
    catalog's ``hf`` field (``meta-llama/Meta-Llama-3-8B``), or a Hugging Face name of the same model's chat or
    instruct variants (``meta-llama/Llama-2-7b-chat-hf``, ``Meta-Llama-3.1-8B-Instruct``,
    ``mistralai/Mixtral-8x7B-Instruct-v0.1``). A name that differs in release, context length or quantization
    (``Mistral-7B-Instruct-v0.2``, ``Phi-3-mini-128k-instruct``, ``...-AWQ``) is not one: None."""
    key = ref.strip().lower()
    if key in catalog():
        return key
    by_hf, forms = _catalog_names()
    return by_hf.get(key) or forms.get(_name_form(ref))


@cache
def _catalog_names() -> tuple[dict[str, str], dict[str, str]]:
    """The catalog's Hugging Face ids (lower case) and the compared forms of its keys and ids, each -> key."""
    cat = catalog()
    by_hf = {m.source.split("huggingface.co/", 1)[-1].split("/blob/", 1)[0].lower(): k for k, m in cat.items()}
    forms: dict[str, str] = {}
    for name, k in [*((k, k) for k in cat), *by_hf.items()]:
        forms.setdefault(_name_form(name), k)
    return by_hf, forms


_HF_REQUIRED = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
}


def from_hf_config(path: Path | str, cfg: dict[str, Any] | None = None) -> ModelArch:
    path = Path(path)
    if cfg is None:
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"cannot read {path}: {e}") from None
    if "text_config" in cfg:  # multimodal wrappers (Gemma 3, Llava) keep the LM under text_config
        cfg = {**cfg, **cfg["text_config"]}

    def get(*keys: str, default: Any = None) -> Any:
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        return default

    vals = {name: get(*keys) for name, keys in _HF_REQUIRED.items()}
    missing = [k for k, v in vals.items() if v is None]
    ffn = get("intermediate_size", "n_inner", "ffn_hidden_size")
    h = vals["hidden_size"]
    if ffn is None and h:
        ffn = 4 * h if cfg.get("model_type") in ("falcon", "gptj", "gpt2", "gpt_neox", "starcoder2") else None
    if ffn is None:
        missing.append("intermediate_size")
    if missing:
        raise ModelError(f"{path}: config.json lacks {', '.join(missing)} (needed for the phase model)")
    heads = vals["num_attention_heads"]
    kv = get("num_key_value_heads", "n_head_kv", "num_kv_heads")
    if kv is None:
        kv = 1 if cfg.get("multi_query") else heads
    mt = cfg.get("model_type", "")
    gated_act = str(get("hidden_act", "hidden_activation", "activation_function", default="silu"))
    ffn_kind = "mlp" if mt in ("falcon", "gptj", "gpt2", "gpt_neox", "starcoder2", "gpt_bigcode") or "gelu_new" == gated_act else "gated"
    return ModelArch(
        name=str(cfg.get("_name_or_path") or path.parent.name or path.stem),
        layers=vals["num_hidden_layers"], hidden=h, heads=heads, kv_heads=kv, ffn=ffn,
        vocab=vals["vocab_size"], head_dim=get("head_dim", default=0) or 0, ffn_kind=ffn_kind,
        tied=bool(get("tie_word_embeddings", default=mt in ("falcon",))),
        experts=get("num_local_experts", "num_experts", "n_routed_experts", default=1) or 1,
        experts_active=get("num_experts_per_tok", "moe_topk", default=1) or 1,
        bias="all" if cfg.get("use_bias") or cfg.get("bias") is True else ("qkv" if mt.startswith("qwen2") else "none"),
        norm="layer" if mt in ("falcon", "gptj", "starcoder2", "gpt2", "gpt_neox") else "rms",
        sliding_window=get("sliding_window", default=0) or 0,
        local_layers=vals["num_hidden_layers"] if get("sliding_window") else 0,
        context=get("max_position_embeddings", "n_positions", default=0) or 0,
        source=str(path),
    )


def from_gguf(path: Path | str) -> ModelArch:
    from ..engine.errors import EngineError
    from ..engine.gguf import read_gguf

    try:
        g = read_gguf(path)
    except EngineError as e:
        raise ModelError(str(e)) from None
    need = {"block_count": g.arch("block_count"), "embedding_length": g.arch("embedding_length"),
            "attention.head_count": g.arch("attention.head_count"), "feed_forward_length": g.arch("feed_forward_length")}
    missing = [k for k, v in need.items() if v is None]
    if missing:
        raise ModelError(f"{path}: GGUF metadata lacks {', '.join(g.architecture + '.' + m for m in missing)}")
    emb = g.tensors.get("token_embd.weight", (0, 0))
    vocab = g.arch("vocab_size") or (emb[1] if len(emb) > 1 else 0)
    heads = need["attention.head_count"]
    key_len = g.arch("attention.key_length") or 0
    window = g.arch("attention.sliding_window") or 0
    a = ModelArch(
        name=g.name, layers=need["block_count"], hidden=need["embedding_length"], heads=heads,
        kv_heads=g.arch("attention.head_count_kv") or heads, ffn=need["feed_forward_length"], vocab=vocab,
        head_dim=key_len, tied="output.weight" not in g.tensors,
        experts=g.arch("expert_count") or 1, experts_active=g.arch("expert_used_count") or 1,
        context=g.arch("context_length") or 0, source=str(path), weight_bytes_actual=g.file_bytes,
        weight_format=f"GGUF {g.quantization}", sliding_window=window,
    )
    # the file's own tensor count is exact; keep the derived formulas but check them against it
    return replace(a, published_params=round(g.parameter_count / 1e9, 4))


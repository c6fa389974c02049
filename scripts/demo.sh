#!/usr/bin/env bash
# The CPU demo (README, command 1): the demo profile of the mini-CALD recipe (scripts/mini_cald.py). A synthetic
# TED-LIUM 3 corpus spoken by espeak-ng, a small Wav2Vec2 trained from scratch as the attention teacher (Std), its
# BiMamba2 conversion distilled Target guided and then Hybrid, an Unguided BiMamba2 for comparison, each evaluated
# on the held-out test split; a table and plots at the end (scripts/mini_cald_report.py).
#
#   bash scripts/demo.sh                 # everything under output/demo (about 25 minutes on 2 CPU cores)
#   DEMO_ROOT=/tmp/demo bash scripts/demo.sh
#
# Rerunning reuses what is finished (corpus, prepared data, model dir, runs at their max_steps, evaluations); an
# interrupted run resumes from its latest checkpoint. `rm -rf output/demo` starts over. Each stage's output goes
# to output/demo/logs/. Needs Python >= 3.11 and PyPI; no root, no GPU (with one, the same profile runs on it).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${DEMO_ROOT:-output/demo}
PYTHON=${PYTHON:-python3}

echo "== 1/3 install the requirements into .venv =="
if ! .venv/bin/python -m pip --version > /dev/null 2>&1; then  # no venv yet, or a broken one
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "error: $PYTHON is $("$PYTHON" -V 2>&1); the demo needs Python >= 3.11 (PYTHON=python3.11 bash $0)" >&2; exit 1; }
  "$PYTHON" -m venv --clear .venv ||
    { echo "error: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== 2/3 the recipe's demo profile: corpus, teacher, students, test-split evaluations (logs: $ROOT/logs) =="
.venv/bin/python scripts/mini_cald.py --profile demo --root "$ROOT"

echo "== 3/3 report: table and plots =="
.venv/bin/python scripts/mini_cald_report.py --root "$ROOT"

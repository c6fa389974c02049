#!/usr/bin/env bash
# Install the test dependencies into .venv and run the CPU test tier (README, command 2).
#   bash scripts/test.sh            # all CPU tests
#   bash scripts/test.sh -k models  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# pytest exits 5 when it collects no test: that is a failure here too (set -e)
exec .venv/bin/python -m pytest -m "not gpu" "$@"

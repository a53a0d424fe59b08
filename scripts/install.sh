#!/usr/bin/env bash
# Install labelloop into ./.venv. torch comes first, pinned, so pip takes the CPU build on this
# machine's disk rather than a multi-GB CUDA build; on a GPU machine install your CUDA torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
extras=${1:-}
.venv/bin/pip install -q -e ".${extras:+[$extras]}" 2>&1 | grep -v "^WARNING: Location" || true
if [ "$extras" = "test" ]; then
  # The MONAI Label client alone: its dependencies are gigabytes and pin an old pydicom.
  .venv/bin/pip install -q --no-deps "monailabel==0.8.5" 2>&1 | grep -v "^WARNING: Location" || true
  # The MNI152 template (benchmarks/anatomy_pool.py) ships in nilearn's wheel: the files, not its stack.
  .venv/bin/pip install -q --no-deps "nilearn==0.14.1" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import server, strategies, torch, monai; print('labelloop installed: torch', torch.__version__, 'monai', monai.__version__)"

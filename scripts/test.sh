#!/usr/bin/env bash
# Install everything, start the real servers the tests use, then lint, type-check and test.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/spine -k lease).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
trap ll_stop_servers EXIT
export TCP_NODELAY=1  # dcmtk tools otherwise wait for delayed ACKs on loopback
echo "== ruff"
.venv/bin/ruff check server strategies apps tests benchmarks
.venv/bin/ruff format --check server strategies apps tests benchmarks
echo "== mypy"
.venv/bin/mypy server strategies
echo "== import-linter"
.venv/bin/lint-imports
echo "== pytest"
# Two test processes (pytest-xdist), a file each at a time: most of a test's time is a server process
# starting (imports) or waiting, so two halve the wall time on 2 cores. LABELLOOP_TEST_WORKERS=0: one.
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 \
  -n "${LABELLOOP_TEST_WORKERS:-2}" --dist loadfile "$@"

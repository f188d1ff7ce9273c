#!/usr/bin/env bash
# A separate environment for the large-output benchmark's competitor: cut-cross-entropy pulls triton
# (about 1 GB) just to import, so it stays out of the project's .venv and out of the test set-up.
#   bash benchmarks/setup-cce.sh && .venv-bench/bin/python benchmarks/large_output.py
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/python -m pip install -q -c constraints/test.txt torch
.venv-bench/bin/python -m pip install -q -c constraints/test.txt cut-cross-entropy -e .

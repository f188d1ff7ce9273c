#!/usr/bin/env bash
# Set up the test environment (pinned torch + torchvision, every oracle library) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -n 2 "$@"

#!/usr/bin/env bash
# Set up the run environment and run the main job: `losskit compare` on an embedded task.
#   scripts/compare.sh                       -> losskit compare digits-noisy (default losses, 3 seeds)
#   scripts/compare.sh digits --losses cross_entropy,focal
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
if [ "$#" -eq 0 ]; then set -- digits-noisy; fi
exec .venv/bin/losskit compare "$@"

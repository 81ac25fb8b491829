#!/usr/bin/env bash
# The main job after its own set-up: `alignkit quickstart` (recipes/quickstart.yaml). Its exit
# status is the quickstart's: a broken quickstart fails here, it is never replaced by another command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec .venv/bin/alignkit quickstart "$@"

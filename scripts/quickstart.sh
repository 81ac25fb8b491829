#!/usr/bin/env bash
# The main job after its own set-up. Until the quickstart pipeline lands, `alignkit doctor`:
# loads the bundled model and generates a reply.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if .venv/bin/alignkit quickstart --help >/dev/null 2>&1; then
  exec .venv/bin/alignkit quickstart "$@"
fi
exec .venv/bin/alignkit doctor "$@"

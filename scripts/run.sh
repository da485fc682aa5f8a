#!/usr/bin/env bash
# Install what is missing, then run AutoPEFT: scripts/run.sh [hydra overrides...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$root/scripts/setup_env.sh")"
cd "$root"
exec "$py" run.py "$@"

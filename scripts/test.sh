#!/usr/bin/env bash
# Install what is missing (with dev extras), then run the test-suite: scripts/test.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$root/scripts/setup_env.sh" dev)"
cd "$root"
exec "$py" -m pytest "$@"

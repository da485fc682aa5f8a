#!/usr/bin/env bash
# Re-lock: install the newest versions pyproject.toml allows into a scratch virtualenv, run the
# test-suite there, and only if it passes write their exact versions to constraints.txt.
#
#   scripts/update_constraints.sh [pytest args...]
#
# torch is left out of the lock (a GPU machine keeps its own build; CPU machines get the local
# CPU build from scripts/setup_env.sh), and so is AutoPEFT itself.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
base="$(command -v python3.11 || command -v python3)"
"$base" -m venv "$scratch/venv"
py="$(AUTOPEFT_PYTHON="$scratch/venv/bin/python" AUTOPEFT_CONSTRAINTS=none "$root/scripts/setup_env.sh" dev)"
(cd "$root" && "$py" -m pytest "$@")
{
  echo "# The exact versions the test-suite last passed with (scripts/update_constraints.sh),"
  echo "# $(date -u +%Y-%m-%d), $("$py" -c 'import platform; print("Python", platform.python_version(), "on", platform.system(), platform.machine())'),"
  echo "# torch $("$py" -c 'import torch; print(torch.__version__)') (not pinned here). scripts/setup_env.sh installs them;"
  echo "# AUTOPEFT_CONSTRAINTS=none installs the newest allowed versions instead."
  "$py" -m pip freeze --exclude-editable | grep -viE '^(torch|autopeft)(==| @)'
} > "$root/constraints.txt.new"
mv "$root/constraints.txt.new" "$root/constraints.txt"
echo "wrote $root/constraints.txt"

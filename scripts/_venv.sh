# Sourced by scripts/dev and scripts/test: make .venv (Python >= 3.11) and install the project's
# extras into it, again only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Notebook Gateway needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
  exit 1
fi
ensure_venv() {
  local extras="$1"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  local stamp=".venv/.installed-${extras}-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "Installing Notebook Gateway and its ${extras} dependencies into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[${extras}]"
    touch "$stamp"
  fi
}

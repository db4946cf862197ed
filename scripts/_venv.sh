# Sourced by scripts/dev and scripts/test: make .venv (Python >= 3.11) and install the locked
# dependencies and the project into it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Notebook Gateway needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
  exit 1
fi
ensure_venv() {
  # The pinned, hashed versions of requirements-test.lock (a superset of every extra: `local` and
  # `test`), then the project itself without dependencies; again only when a lock or pyproject.toml
  # changed since the last install. `scripts/lock` regenerates the lock files.
  local extras="$1"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  local stamp=".venv/.installed-${extras}-$(cat pyproject.toml requirements-test.lock | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "Installing Notebook Gateway and its ${extras} dependencies (requirements-test.lock) into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements-test.lock
    .venv/bin/python -m pip install --quiet --no-deps -e .
    .venv/bin/python -m pip check >&2  # the lock and pyproject.toml agree
    touch "$stamp"
  fi
}

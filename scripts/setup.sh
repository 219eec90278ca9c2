#!/usr/bin/env bash
# One-command set-up: .venv with the package and its dev + demo extras, anvil + solc +
# OpenZeppelin in .tools/ (pinned, from npm), PostgreSQL server binaries found or installed
# from Debian.
# Idempotent: a second run checks stamps and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

# Python environment: reinstall only when pyproject.toml changed.
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if [ ! -f .venv/.stamp ] || [ pyproject.toml -nt .venv/.stamp ]; then
  .venv/bin/pip install -q -e '.[dev]'   # dev includes the demo extra
  touch .venv/.stamp
fi

# Node tools, pinned in scripts/tools-package.json.
mkdir -p .tools
if [ ! -f .tools/.stamp ] || [ scripts/tools-package.json -nt .tools/.stamp ] \
   || [ ! -x .tools/node_modules/.bin/anvil ]; then
  cp scripts/tools-package.json .tools/package.json
  (cd .tools && npm install --no-audit --no-fund --loglevel=error)
  touch .tools/.stamp
fi

# PostgreSQL server binaries.
find_pg() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
  done
  return 1
}
if ! PGBIN=$(find_pg); then
  echo "setup: PostgreSQL server binaries missing, installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_pg)
fi
echo "$PGBIN" > .tools/pgbin
# Headless Chromium for the ops page's browser test (tests/e2e/test_api_live.py).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: chromium missing, installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres 2>/dev/null || true
echo "setup: ok (python $(.venv/bin/python -V 2>&1 | cut -d' ' -f2), anvil $(.tools/node_modules/.bin/anvil --version | head -1 | cut -d' ' -f3), postgres in $PGBIN)"

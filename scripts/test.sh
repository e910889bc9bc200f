#!/usr/bin/env bash
# Install what the tests need into a fresh virtualenv (.venv-test) and run the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the slow tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv --clear .venv-test
. .venv-test/bin/activate
python -m pip install -q --upgrade pip
# torch first, from the CPU build pinned in pyproject.toml (the st extra, which the test extra includes),
# so nothing resolves a CUDA wheel.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# The Node.js producer of the BullMQ interoperability tests (tests/jobs/node); without npm those tests skip
# and say why, so a missing npm or a failed install is not fatal here.
if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/jobs/node --no-audit --no-fund --loglevel=error \
        || echo "npm ci --prefix tests/jobs/node failed: the BullMQ tests with a Node.js producer will skip" >&2
fi
# Debian's chromium for the web UI test (tests/server/test_ui.py drives it with Playwright; never
# `playwright install`). Without it, or without root and apt, that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "apt-get install chromium failed: the web UI test will skip" >&2
fi
set +e
python -m pytest -q "$@"
rc=$?
set -e
# pytest exits 5 when a marker selects no tests: that is not a failure of the code.
if [[ $rc -eq 5 ]]; then rc=0; fi
exit $rc

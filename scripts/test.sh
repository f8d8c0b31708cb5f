#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set up, lint (ruff, mypy --strict on the
# codec and control core), then pytest.
# pytest's exit 5 ("no tests collected") is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check treadctl benchmarks tests fuzz soak || exit 1
.venv/bin/mypy treadctl/ftms treadctl/control || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests - treating as failure" >&2
    exit 1
fi
exit "$rc"

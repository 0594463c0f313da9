#!/usr/bin/env bash
# Run every test: Rust unit tests, the integration tests (real binary, real workers,
# real Python) and the Python shim's unit tests (run from the integration suite).
set -euo pipefail
cd "$(dirname "$0")/.."

# Test-only Python dependencies: Flask (WSGI adapter tests), FastAPI and uvloop (ASGI
# adapter tests); the shim itself is stdlib only. Tests run the `python3` first on PATH:
# .ci/run puts its own venv there. Where pip may not install (a PEP 668 system
# interpreter) the run goes on and only those tests fail, with this hint.
if ! python3 -c 'import flask, fastapi, uvloop, django, websockets' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt ||
        echo "scripts/test.sh: could not install the test dependencies for $(command -v python3);" \
            "the Flask/ASGI tests will fail: use a venv (bash .ci/run makes .venv-ci)" >&2
fi

cargo test "$@"

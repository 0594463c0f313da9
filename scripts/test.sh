#!/usr/bin/env bash
# Run every test: Rust unit tests, the integration tests (real binary, real workers,
# real Python) and the Python shim's unit tests (run from the integration suite).
set -euo pipefail
cd "$(dirname "$0")/.."

# Test-only Python dependencies: Flask (WSGI adapter tests), FastAPI and uvloop (ASGI
# adapter tests); the shim itself is stdlib only.
if ! python3 -c 'import flask, fastapi, uvloop' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
fi

cargo test "$@"

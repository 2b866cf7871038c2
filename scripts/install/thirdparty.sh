#!/usr/bin/env bash
# Third-party MCP servers for tests/thirdparty: two from npm (tests/thirdparty/package.json,
# run through npx) and mcp-server-time from PyPI in a venv of its own (tests/thirdparty/
# .venv-time, from Debian's /usr/bin/python3 so an unprivileged user can run it too).
# Idempotent: skips what is installed at the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/../../tests/thirdparty"
installed() {
    node -p "require('./node_modules/$1/package.json').version" 2>/dev/null || true
}
want() {
    node -p "require('./package.json').dependencies['$1']"
}
if [[ "$(installed @modelcontextprotocol/server-filesystem)" != "$(want @modelcontextprotocol/server-filesystem)" ||
      "$(installed @modelcontextprotocol/server-memory)" != "$(want @modelcontextprotocol/server-memory)" ]]; then
    npm install --no-audit --no-fund --silent
fi
pin=$(grep -v '^#' requirements-time.txt | head -1)
have=$(.venv-time/bin/python -c 'from importlib.metadata import version; print(version("mcp-server-time"))' 2>/dev/null || true)
if [[ "$have" != "${pin#*==}" ]]; then
    /usr/bin/python3 -m venv .venv-time
    .venv-time/bin/python -m pip install -q -r requirements-time.txt
fi

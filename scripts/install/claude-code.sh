#!/usr/bin/env bash
# Claude Code from npm, into tests/claude-code/ (its own package.json): the real MCP client
# tests/ops/test_claude_code.py drives with `claude mcp list`. Idempotent: skips the install
# when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../../tests/claude-code"
want=$(node -p 'require("./package.json").dependencies["@anthropic-ai/claude-code"]')
have=$(node -p 'try { require("./node_modules/@anthropic-ai/claude-code/package.json").version } catch (e) { "" }')
if [[ "$have" == "$want" && -x node_modules/.bin/claude ]]; then
    exit 0
fi
npm install --no-audit --no-fund --silent

#!/usr/bin/env bash
# supergateway (npm, pinned in bench/supergateway/package.json), the stdio-to-Streamable-HTTP
# gateway bench/bench_http.py compares lunad's HTTP front with. Only the bench needs it (its
# smoke test skips the row without it). Idempotent: skips the install when the pinned version
# is there already.
set -euo pipefail
cd "$(dirname "$0")/../../bench/supergateway"
want=$(node -p 'require("./package.json").dependencies.supergateway')
have=$(node -p "require('./node_modules/supergateway/package.json').version" 2>/dev/null || true)
if [[ "$have" == "$want" && -x node_modules/.bin/supergateway ]]; then
    exit 0
fi
npm install --no-audit --no-fund --silent

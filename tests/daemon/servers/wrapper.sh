#!/bin/sh
# A wrapper as many MCP servers are launched (npx, uvx, sh -c): it backgrounds a helper that
# would outlive a careless host, then execs the real server. The helper's pid goes to stderr.
sleep 3600 </dev/null >/dev/null 2>&1 &
echo "helper pid $!" >&2
exec "$@"

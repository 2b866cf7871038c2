"""A minimal host for the native supervisor, standing in for lunad in the orphan test.

Runs `NativeSupervisor` exactly as lunad does, prints one JSON line with its status once Redis
(and Prometheus, when asked) are up, then waits forever: the test SIGKILLs this process and
checks that redis-server and prometheus die with it.

    python -m tests.infra.native_host STATE_DIR REDIS_PORT PROMETHEUS_PORT|0
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from daemon.infra import create_supervisor, parse_infra_config


async def main(state_dir: str, redis_port: int, prometheus_port: int) -> None:
    table = {"backend": "native", "redis_port": redis_port, "poll_interval": 0.2}
    if prometheus_port:
        table["prometheus_port"] = prometheus_port
    else:
        table["prometheus"] = False
    sup = create_supervisor(parse_infra_config(table, "native_host"), Path(state_dir),
                            Path(__file__).resolve().parents[2], metrics_address=None)
    await sup.start()
    wanted = ["redis", "prometheus"] if prometheus_port else ["redis"]
    while not all(sup.status()["services"][name]["up"] for name in wanted):
        await asyncio.sleep(0.05)
    print(json.dumps(sup.status()), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

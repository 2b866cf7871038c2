"""STAND-IN for the `docker` CLI, for the compose backend's tests. Not Docker.

No Docker engine or image registry is reachable where the tests run, so the tests put a
`docker` wrapper first on PATH that runs this script. It answers only what lunad asks
(`info`, `compose version`, and `compose -f F -p P config|up|ps|restart|down`), replays
`docker compose ps --format json` outputs (tests/infra/fixtures/compose-ps/) as a scenario
says, and records every invocation, so tests check what lunad ran and when. The fixtures are
HAND-WRITTEN in the shape Compose v2 prints (see their README), not captured from an engine.

Where it matters to lunad it behaves like real Compose: `up -d --wait` (project-wide) blocks
while a container is starting and ends with exit 1 as soon as one is unhealthy or exited,
printing `container NAME is unhealthy` / `container NAME exited (CODE)` (that text is also
hand-written). While it waits, time passes: it moves through the current `ps` sequence one
fixture per `up_wait_step` seconds (default 0.1), as successive `ps` calls would, and gives
up with exit 1 after `up_wait_timeout` seconds (default 5; real Compose waits unbounded
unless given --wait-timeout). An `up` entry with an explicit "exit" skips the waiting.

State lives in $FAKE_DOCKER_DIR:
- scenario.json (written by the test):
    {"services": ["redis", ...],            # `config --services`
     "info_exit": 0,                        # `docker info`
     "up": [{"exit": 1, "stderr": "..."}],  # n-th `up` (project-wide) result; last repeats;
                                            # without "exit": --wait as above
     "up_wait_step": 0.1, "up_wait_timeout": 5,
     "ps": ["starting.jsonl", ...],         # fixtures returned by successive `ps`; last repeats
     "restart": {"redis": [["all-healthy.jsonl"]]},  # n-th `restart SERVICE` (or `up -d
                                            # SERVICE`): the `ps` sequence from then on
     "restart_exit": 0, "down_exit": 0}
- state.json: where each sequence is (kept by this script).
- calls.jsonl: one {"t": unix time, "argv": [...], "env": {...}} per invocation; env holds
  the LUNA_* and GRAFANA_* variables lunad gave the CLI (what the compose file interpolates).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "compose-ps"


def main(argv: list[str]) -> int:
    home = Path(os.environ["FAKE_DOCKER_DIR"])
    with (home / "calls.jsonl").open("a") as log:
        env = {k: v for k, v in os.environ.items() if k.startswith(("LUNA_", "GRAFANA_"))}
        log.write(json.dumps({"t": time.time(), "argv": argv, "env": env}) + "\n")
    scenario: dict[str, Any] = json.loads((home / "scenario.json").read_text())
    state_file = home / "state.json"
    state: dict[str, Any] = (json.loads(state_file.read_text()) if state_file.exists()
                             else {"ps": scenario.get("ps", ["none.jsonl"]), "ps_at": 0,
                                   "up_at": 0, "restarts": {}})

    def save() -> None:
        state_file.write_text(json.dumps(state))

    if argv[:1] == ["info"]:
        return int(scenario.get("info_exit", 0))
    if argv[:1] != ["compose"]:
        print(f"fake docker: unsupported command {argv!r}", file=sys.stderr)
        return 125
    args = argv[1:]
    while args and args[0] in ("-f", "-p"):  # global flags lunad passes
        args = args[2:]
    cmd = args[0] if args else ""
    if cmd == "version":
        print("Docker Compose version v2.29.7 (stand-in)")
        return 0
    if cmd == "config" and args[1:] == ["--services"]:
        print("\n".join(scenario.get("services", [])))
        return 0
    if cmd == "ps":
        seq = state["ps"]
        fixture = seq[min(state["ps_at"], len(seq) - 1)]
        state["ps_at"] += 1
        save()
        sys.stdout.write((FIXTURES / fixture).read_text())
        return 0
    if cmd == "up" and len([a for a in args[1:] if not a.startswith("-")]) == 0:
        results = scenario.get("up", [{}])
        result = results[min(state["up_at"], len(results) - 1)]
        state["up_at"] += 1
        if "ps" in result:
            state["ps"], state["ps_at"] = result["ps"], 0
        save()
        if result.get("stderr"):
            print(result["stderr"], file=sys.stderr)
        if "exit" not in result and "--wait" in args:
            return wait_for_health(scenario, state, save)
        return int(result.get("exit", 0))
    if cmd in ("restart", "up"):
        service = args[-1]
        n = state["restarts"].get(service, 0)
        state["restarts"][service] = n + 1
        sequences = scenario.get("restart", {}).get(service)
        if sequences:
            state["ps"], state["ps_at"] = sequences[min(n, len(sequences) - 1)], 0
        save()
        code = int(scenario.get("restart_exit", 0))
        if code:
            print(f"Error response from daemon: cannot restart {service}", file=sys.stderr)
        return code
    if cmd == "down":
        return int(scenario.get("down_exit", 0))
    print(f"fake docker: unsupported compose command {args!r}", file=sys.stderr)
    return 125


def wait_for_health(scenario: dict[str, Any], state: dict[str, Any], save: Any) -> int:
    """`up -d --wait`: 0 once every container runs (healthy, where it has a healthcheck);
    1 at the first unhealthy or exited one, or when the wait times out."""
    step = float(scenario.get("up_wait_step", 0.1))
    deadline = time.monotonic() + float(scenario.get("up_wait_timeout", 5))
    while True:
        seq = state["ps"]
        fixture = (FIXTURES / seq[min(state["ps_at"], len(seq) - 1)]).read_text().strip()
        rows = json.loads(fixture) if fixture.startswith("[") else [
            json.loads(line) for line in fixture.splitlines()]
        waiting = False
        for row in rows:
            if row["State"] in ("exited", "dead"):
                print(f"container {row['Name']} exited ({row.get('ExitCode', 1)})",
                      file=sys.stderr)
                return 1
            if row.get("Health") == "unhealthy":
                print(f"container {row['Name']} is unhealthy", file=sys.stderr)
                return 1
            waiting |= row["State"] != "running" or row.get("Health") == "starting"
        if not waiting:
            return 0
        if time.monotonic() > deadline:
            print("timeout waiting for the project to be healthy", file=sys.stderr)
            return 1
        time.sleep(step)
        if state["ps_at"] < len(seq) - 1:
            state["ps_at"] += 1
            save()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

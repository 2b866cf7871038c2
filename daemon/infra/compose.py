"""The `compose` backend: Redis, Prometheus and Grafana in Docker, run by the compose CLI.

lunad runs `docker compose -f FILE -p PROJECT ...` as short-lived child processes (own process
group, killed with lunad; children.py) and never talks to the engine's API itself:
1. `config --services` names the services, so status lists them before they exist.
2. `up -d --wait` creates and starts them (retried with backoff while the project has no
   container at all, e.g. a missing GRAFANA_ADMIN_PASSWORD makes compose refuse the file).
3. Every `poll_interval`: `ps -a --format json` (compose_ps.py). A service whose container is
   unhealthy, exited or missing is restarted (`restart SERVICE`, or `up -d SERVICE` when it
   has no container) after a backoff delay (daemon/backoff.py), because Docker's restart
   policy ignores unhealthy containers. `restarting` (Docker's own policy at work) and
   `paused` (someone's deliberate act) are reported, not acted on.
4. stop(): ends the loop; `down` only with `down_on_stop = true`, since containers and their
   volumes normally outlive lunad restarts.

Before `up`, lunad prepares what the file interpolates (compose_env.py): the Redis password
and Grafana's admin password (0600 files in the state dir, daemon/secrets.py; a
GRAFANA_ADMIN_PASSWORD in lunad's environment wins), the ports of `[infra]`, and a
prometheus.yml that scrapes lunad's real exporter address. They reach the compose CLI through
its environment only, never its argv. Every service runs on the host's network, so Redis's URL
is 127.0.0.1:redis_port with the password (a port `ps` reports published wins, for a file
that publishes one).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from daemon.backoff import Backoff
from daemon.infra import states
from daemon.infra.children import cancel_and_wait, describe_returncode, run_command
from daemon.infra.compose_env import ComposeEnv, prepare
from daemon.infra.compose_ps import ComposePsError, Container, assess, by_service, parse_ps
from daemon.infra.config import InfraConfig
from daemon.infra.states import ServiceRecord
from daemon.secrets import SecretError

log = logging.getLogger("luna.infra")

REDIS_PORT_IN_CONTAINER = 6379
UP_TIMEOUT = 600.0       # `up --wait` may pull images first
COMMAND_TIMEOUT = 120.0  # restart waits out the container's stop grace period


class ComposeSupervisor:
    backend = "compose"

    def __init__(self, config: InfraConfig, state_dir: Path, project_dir: Path, *,
                 metrics_address: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.project_dir = Path(project_dir)
        self.metrics_address = metrics_address
        file = Path(config.compose_file)
        self.compose_file = file if file.is_absolute() else self.project_dir / file
        self.env = dict(os.environ if env is None else env)
        self.prepared: ComposeEnv | None = None
        self.records: dict[str, ServiceRecord] = {}
        self.detail = ""
        self._containers: dict[str, Container] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._retry_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_poll = asyncio.Event()

    # -- the public face -------------------------------------------------------------------

    async def start(self) -> None:
        """Start `up` and the poll loop; wait up to start_wait for the first verdict."""
        if self._task is not None:
            return
        self._first_poll = asyncio.Event()
        for rec in self.records.values():  # started again after a stop()
            rec.to(states.STARTING, "waiting for `docker compose up`")
        self._task = asyncio.create_task(self._run(), name="infra-compose")
        try:
            async with asyncio.timeout(self.config.start_wait):
                await self._first_poll.wait()
        except TimeoutError:
            log.warning("infra compose: no verdict %gs after start; lunad goes on",
                        self.config.start_wait)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        if self.config.down_on_stop:
            code, out = await self._compose(["down"], COMMAND_TIMEOUT)
            after = "removed by `docker compose down`" if code == 0 else \
                f"`docker compose down` {describe_returncode(code)}: {out}"
        else:
            after = "left running by lunad (infra.down_on_stop = false)"
        for rec in self.records.values():
            if rec.state != states.STOPPED:
                rec.to(states.STOPPED, after)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "backend": self.backend,
            "services": {name: rec.snapshot() for name, rec in self.records.items()}}
        if self.detail:
            result["detail"] = self.detail
        if self.prepared is not None:
            result["secrets"] = self.prepared.where()
        return result

    def redis_url(self) -> str | None:
        """The supervised Redis, password included, while it is up (for workers' env only)."""
        rec = self.records.get("redis")
        container = self._containers.get("redis")
        if rec is None or not rec.up or container is None or self.prepared is None:
            return None
        host, port = "127.0.0.1", self.config.redis_port  # host network: the file's --port
        where = container.published(REDIS_PORT_IN_CONTAINER)
        if where is not None:
            host = "127.0.0.1" if where[0] in ("", "0.0.0.0", "::") else where[0]
            port = where[1]
        return f"redis://:{self.prepared.redis_password}@{host}:{port}/0"

    def _prepare(self) -> str:
        """Passwords, ports and prometheus.yml into the compose CLI's environment; "" or why
        not (then compose refuses the file, naming the unset variable, and `up` is retried)."""
        try:
            self.prepared = prepare(self.config, self.state_dir, self.metrics_address, self.env)
        except (SecretError, OSError) as e:
            why = f"cannot prepare the compose environment: {e}"
            log.error("infra compose: %s", why)
            return why
        self.env.update(self.prepared.variables)
        return ""

    # -- the loop ----------------------------------------------------------------------------

    async def _compose(self, args: list[str], timeout: float) -> tuple[int, str]:
        """Run one `docker compose` command: (exit code, stdout if it succeeded, else why)."""
        argv = ["docker", "compose", "-f", str(self.compose_file), "-p", self.config.project,
                *args]
        try:
            code, out, err = await run_command(argv, timeout=timeout, env=self.env,
                                               cwd=str(self.project_dir))
        except OSError as e:
            return 127, f"cannot run docker: {e}"
        if args[0] != "ps" or code != 0:  # ps runs every poll: its output is data, not news
            log.info("infra compose: `%s` %s%s", " ".join(args), describe_returncode(code),
                     f": {err}" if err else "")
        return code, out if code == 0 else (err or out.strip()[-500:])

    def _record(self, name: str) -> ServiceRecord:
        if name not in self.records:
            self.records[name] = ServiceRecord(name)
            self.records[name].to(states.STARTING, "waiting for `docker compose up`")
            self._backoffs[name] = Backoff(
                base=self.config.restart_backoff_base, cap=self.config.restart_backoff_cap,
                reset_after=self.config.restart_reset_after,
                clock=asyncio.get_running_loop().time)
        return self.records[name]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._prepare()
        code, out = await self._compose(["config", "--services"], COMMAND_TIMEOUT)
        if code == 0:
            for name in out.split():
                self._record(name)
        up = Backoff(base=self.config.restart_backoff_base, cap=self.config.restart_backoff_cap,
                     reset_after=self.config.restart_reset_after, clock=loop.time)
        up_due: float | None = loop.time()
        while True:
            try:
                up_due = await self._cycle(up, up_due)
            except Exception:
                # A bug in one cycle must not end supervision for good: log it, go on.
                log.exception("infra compose: poll cycle failed")
            self._first_poll.set()
            await asyncio.sleep(self._next_sleep(loop.time()))

    async def _cycle(self, up: Backoff, up_due: float | None) -> float | None:
        """One poll: `up` when due, `ps`, then each service; returns when `up` is next due."""
        loop = asyncio.get_running_loop()
        if up_due is not None and loop.time() >= up_due:
            problem = "" if self.prepared is not None else self._prepare()
            code, out = await self._compose(["up", "-d", "--wait"], UP_TIMEOUT)
            if code == 0:
                self.detail, up_due = "", None
                up.record_success()
            else:
                delay = up.record_failure(out)
                self.detail = (f"{problem + '; ' if problem else ''}"
                               f"`docker compose up` {describe_returncode(code)}: {out}; "
                               f"retry in {delay:.1f}s if nothing runs by then")
                log.warning("infra compose: %s", self.detail)
                up_due = loop.time() + delay
        containers = await self._poll()
        if containers is None:
            return up_due
        if containers:
            # Something runs: per-service restarts take it from here, and a failed `up`'s
            # "retry" detail no longer holds (real `up --wait` exits 1 while a container is
            # unhealthy; each service's own record says what is wrong with it).
            up_due, self.detail = None, ""
        elif up_due is None:
            # Nothing at all (e.g. someone ran `docker compose down`): `up` again, backing off
            # so that an `up` that succeeds but creates nothing cannot spin.
            delay = up.record_failure("no container")
            self.detail = f"the project has no container; `docker compose up` in {delay:.1f}s"
            up_due = loop.time() + delay
        for name in sorted(set(self.records) | set(containers)):
            await self._reconcile(name, containers.get(name), up_due is not None)
        return up_due

    def _next_sleep(self, now: float) -> float:
        pending = [at - now for at in self._retry_at.values()]
        return max(0.01, min([self.config.poll_interval, *pending]))

    async def _poll(self) -> dict[str, Container] | None:
        code, out = await self._compose(["ps", "-a", "--format", "json"], COMMAND_TIMEOUT)
        try:
            if code != 0:
                raise ComposePsError(f"{describe_returncode(code)}: {out}")
            containers = by_service(parse_ps(out))
        except ComposePsError as e:
            # Without a view of the containers nothing may be called up, nor restarted.
            why = f"`docker compose ps` failed: {e}"
            log.warning("infra compose: %s", why)
            for rec in self.records.values():
                rec.to(states.UNHEALTHY if rec.state == states.UP else rec.state, why)
            self._containers = {}
            return None
        self._containers = containers
        return containers

    async def _reconcile(self, name: str, container: Container | None, up_pending: bool) -> None:
        rec = self._record(name)
        backoff = self._backoffs[name]
        loop = asyncio.get_running_loop()
        verdict = assess(container)
        if rec.state == states.BACKOFF:
            if verdict.state == states.UP:  # it recovered while we waited: no restart needed
                rec.to(states.RESTARTING)
            elif loop.time() < self._retry_at[name]:
                return
            else:
                await self._restart(name, rec, container)
                return
        if verdict.needs_restart:
            if container is None and up_pending:
                return  # `up` for the whole project is due anyway
            delay = backoff.record_failure(verdict.detail)
            self._retry_at[name] = loop.time() + delay
            rec.to(states.BACKOFF, f"{verdict.detail}; restart in {delay:.1f}s "
                                   f"({backoff.failures} failures in a row)")
            log.warning("infra %s: %s", name, rec.detail)
            return
        self._retry_at.pop(name, None)
        if verdict.state == states.UP:
            backoff.record_success()
            rec.to(states.UP, verdict.detail)
        elif verdict.state == states.STARTING:
            # A container starting again after our restart is still "restarting" to us.
            rec.to(rec.state if rec.state in (states.STARTING, states.RESTARTING)
                   else states.RESTARTING, verdict.detail)
        elif verdict.state == states.STOPPED:
            rec.to(rec.state, verdict.detail)  # being removed: the next poll shows what follows
        else:
            rec.to(verdict.state, verdict.detail)

    async def _restart(self, name: str, rec: ServiceRecord, container: Container | None) -> None:
        args = ["restart", name] if container is not None else ["up", "-d", name]
        self._retry_at.pop(name, None)
        rec.restarts += 1
        rec.to(states.RESTARTING, f"`docker compose {' '.join(args)}`")
        log.warning("infra %s: docker compose %s (restart %d)", name, " ".join(args),
                    rec.restarts)
        code, out = await self._compose(args, COMMAND_TIMEOUT)
        if code != 0:
            backoff = self._backoffs[name]
            why = f"`docker compose {' '.join(args)}` {describe_returncode(code)}: {out}"
            delay = backoff.record_failure(why)
            self._retry_at[name] = asyncio.get_running_loop().time() + delay
            rec.to(states.BACKOFF, f"{why}; retry in {delay:.1f}s "
                                   f"({backoff.failures} failures in a row)")

"""`lunad [--config PATH]`: the daemon. Wires config, infra, pools, listeners, control, metrics.

Start, in this order (each step needs the previous one):
  1. config (a ConfigError prints file, key and what is allowed; exit 2);
  2. the 0700 runtime dir and its lock (daemon/runlock.py: a second lunad on the same dir
     exits 1 here, naming the running pid, before it starts or touches anything), the state
     dir;
  3. infra (`daemon.infra.create_supervisor`; backend "none" starts nothing) so that new
     workers get `LUNA_REDIS_URL` from `infra.redis_url()` through the pool's `extra_env`;
  4. one pool per server (filling to min_idle in the background) and its socket listener;
  5. the control socket and the /metrics exporter; then READY=1 to systemd, and WATCHDOG=1 at
     half of WatchdogSec when asked.
  6. the Streamable HTTP front when `[http] listen` is set (daemon/http/): another front over
     the same pools; its 2025-11-25 sessions are made by `open_http_session`, exactly as a
     socket connection's are.

SIGTERM / SIGINT: every listener stops accepting (socket files removed), sessions get up to
`drain_timeout` to finish, the rest are ended (their clients get an error), every worker is
stopped (pool.stop), infra is stopped, exit 0. A second signal skips the rest of the drain.
If lunad itself is SIGKILLed its workers die by their parent-death signal (worker.py).

Child processes are reaped through a pidfd watched by the event loop (`use_pidfd_watcher`):
asyncio's default watcher on Python 3.11 starts one thread per child, and its start costs
~2 ms of the loop per spawn.

The daemon holds a `ServerHost` per server: pool + listener + live sessions + state
(serving | draining). It is the `ControlTarget` of control.py and the snapshot view of
metrics.py; both read its state on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import grp
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from daemon import (
    __version__,
    banner,
    cgroups,
    childproc,
    containment,
    notify,
    paths,
    ratelog,
    runlock,
    shipped,
    states,
)
from daemon.config import DaemonConfig, ServerConfig, load_config
from daemon.control import ControlError, ControlServer
from daemon.errors import ConfigError
from daemon.infra import create_supervisor
from daemon.listener import Listener, Peer, SocketInUse
from daemon.metrics import Metrics, Snapshot, WorkerSample
from daemon.pool import Pool, PoolExhausted, ServerUnavailable
from daemon.session import Session

log = logging.getLogger("lunad")

PROJECT_DIR = shipped.project_dir()
SERVING = "serving"
DRAINING = "draining"
BACKOFF = "backoff"  # shown for a serving server while its spawns fail (status only)


class StartError(Exception):
    """lunad cannot start as configured; the message says what to change."""


def use_pidfd_watcher(loop: asyncio.AbstractEventLoop) -> str:
    """Reap children via pidfds on `loop` where the kernel has them; the watcher in use.

    "pidfd": installed and attached to `loop` (pidfd_open, Linux >= 5.3). "default": left
    to asyncio, either because Python >= 3.12 picks pidfds itself, or because the kernel
    cannot (asyncio's thread-per-child watcher then).
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return "default"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return "default"
    watcher = asyncio.PidfdChildWatcher()
    # Attached explicitly: the policy attaches a watcher only when a loop is *set*, and
    # asyncio.run() set this one before we got here.
    watcher.attach_loop(loop)
    asyncio.get_event_loop_policy().set_child_watcher(watcher)
    return "pidfd"


class ServerHost:
    """One configured server: its pool, its socket, its live sessions."""

    def __init__(self, config: ServerConfig, pool: Any, socket_path: Path) -> None:
        self.name = config.name
        self.config = config
        self.pool = pool
        self.socket_path = socket_path
        self.listener: Listener | None = None
        self.sessions: dict[str, Session] = {}
        self.state = SERVING

    def describe(self) -> dict[str, Any]:
        snap = self.pool.snapshot()
        # A serving server whose spawns fail serves nobody: say so, not "serving".
        state = BACKOFF if self.state == SERVING and snap["backoff"]["active"] else self.state
        return {"socket": str(self.socket_path), "state": state, **snap,
                "sessions": [s.describe() for s in self.sessions.values()]}


class Daemon:
    """lunad's one event-loop object; see the module docstring."""

    def __init__(self, config: DaemonConfig, *, project_dir: Path = PROJECT_DIR) -> None:
        self.config = config
        self.project_dir = project_dir
        self.metrics = Metrics()
        self.hosts: dict[str, ServerHost] = {}
        self.infra: Any = None
        self.control: ControlServer | None = None
        self.metrics_address: str | None = None
        self.started = time.monotonic()
        self._ids = itertools.count(1)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog_task: asyncio.Task[None] | None = None
        self.http: Any = None  # daemon.http.front.HttpFront when [http] listen is set

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.config
        group = grp.getgrnam(cfg.socket_group).gr_gid if cfg.socket_group else None
        loose = paths.ensure_private_dir(cfg.runtime_dir, group)
        if loose is not None:
            log.warning("runtime dir %s had mode %04o: tightened to %04o (others could reach "
                        "lunad's sockets)", cfg.runtime_dir, loose, 0o700 if group is None
                        else 0o710)
        lock = runlock.RunLock(cfg.runtime_dir).acquire()  # before anything is started
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> int:
        cfg = self.config
        log.info("%s", banner.starting_line(__version__, str(cfg.source), str(cfg.runtime_dir),
                                            str(cfg.state_dir)))
        loose = paths.ensure_private_dir(cfg.state_dir)
        if loose is not None:
            log.warning("state dir %s had mode %04o: tightened to 0700 (Luna's memories and "
                        "secrets are lunad's user's only)", cfg.state_dir, loose)
        loop = asyncio.get_running_loop()
        # A stranger exhausting fds must not flood the log with a traceback per failed accept.
        loop.set_exception_handler(ratelog.accept_error_handler(
            ratelog.RateLimitedLog(log, schedule=loop.call_later)))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        watcher = use_pidfd_watcher(loop)
        # Asked once now, not at the first session's top-up (a short `setpriv --help`).
        log.info("child watcher: %s; parent-death signal via %s", watcher,
                 childproc.setpriv() or "preexec_fn (no setpriv: slower forks)")

        self.infra = create_supervisor(cfg.infra, cfg.state_dir, self.project_dir,
                                       metrics_address=cfg.metrics_listen)
        await self.infra.start()
        for line in banner.infra_lines(self.infra.status()):
            log.info("%s", line)
        inherited = os.environ.get("LUNA_REDIS_URL")
        used = self.infra.redis_url()
        if inherited and used and inherited != used:
            log.warning("%s", banner.redis_override_line(inherited, self.infra.backend, used))
        try:
            for name, server in cfg.servers.items():
                self.metrics.add_server(name)
                self._log_containment(server)
                pool = self.make_pool(server)
                host = ServerHost(server, pool, paths.server_socket(cfg.runtime_dir, name))
                self.hosts[name] = host
                await pool.start()
                host.listener = Listener(host.socket_path, self._handler(host),
                                         allowed_uids=cfg.allowed_uids,
                                         socket_group=cfg.socket_group)
                await host.listener.start()
            self.control = ControlServer(paths.control_socket(cfg.runtime_dir), self,
                                         allowed_uids=cfg.allowed_uids)
            await self.control.start()
            self.metrics.set_view(self.snapshot, loop)
            if cfg.metrics_listen:
                try:
                    host_, port = self.metrics.serve(cfg.metrics_listen)
                except OSError as exc:
                    raise StartError(
                        f"{cfg.source}: metrics.listen = {cfg.metrics_listen!r}: cannot serve "
                        f"/metrics there ({exc.strerror or exc}); choose a free HOST:PORT, "
                        'or "" to turn the exporter off') from None
                self.metrics_address = f"{host_}:{port}"
            if cfg.http.enabled:
                from daemon.http.front import HttpFront  # imports uvicorn: only when used
                try:
                    self.http = HttpFront(cfg, self)
                    await self.http.start()
                except OSError as exc:
                    raise StartError(
                        f"{cfg.source}: http.listen = {cfg.http.listen!r}: cannot serve HTTP "
                        f"there ({exc.strerror or exc}); choose a free HOST:PORT, or \"\" to "
                        "turn the HTTP front off") from None
            log.info("lunad %s ready: runtime %s, servers %s, metrics %s", __version__,
                     cfg.runtime_dir, ", ".join(self.hosts), self.metrics_address or "off")
            log.info("%s", banner.next_line({n: str(h.socket_path)
                                             for n, h in self.hosts.items()}))
            # Everything allocated so far lives as long as lunad: keep the cyclic GC from
            # rescanning it on every full collection (the hot path allocates per message).
            gc.collect()
            gc.freeze()
            notify.notify("READY=1")
            interval = notify.watchdog_interval()
            if interval:
                # Not in self._tasks: shutdown waits for those (sessions), never for this.
                self._watchdog_task = loop.create_task(self._watchdog(interval))
            await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    def request_stop(self, sig: int | None = None) -> None:
        if self._stop.is_set():
            log.warning("second signal: ending sessions now")
            self._force.set()
            return
        log.info("signal %s: draining (up to %g s)", sig, self.config.drain_timeout)
        self._stop.set()

    async def _shutdown(self) -> None:
        notify.notify("STOPPING=1")
        if self.http is not None:
            self.http.stop_accepting()
        for host in self.hosts.values():
            host.state = DRAINING
            if host.listener is not None:
                host.listener.stop_accepting()
        deadline = time.monotonic() + self.config.drain_timeout
        while any(h.sessions for h in self.hosts.values()) and not self._force.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), min(left, 0.05))
        for host in self.hosts.values():
            for session in list(host.sessions.values()):
                session.stop("killed", "shutdown",
                             f"lunad is shutting down; session {session.id} ended after the "
                             f"{self.config.drain_timeout:g} s drain timeout")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.drain_timeout + 5)
        if self.http is not None:
            await self.http.close()
        await asyncio.gather(*(h.pool.stop() for h in self.hosts.values()),
                             return_exceptions=True)
        if self.control is not None:
            await self.control.close()
        for host in self.hosts.values():
            if host.listener is not None:
                await host.listener.close()
        if self.infra is not None:
            try:
                await self.infra.stop()
            except Exception:
                log.exception("stopping infra failed")
        self.metrics.close()
        for task in list(self._tasks):
            task.cancel()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        log.info("lunad stopped")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watchdog(self, interval: float) -> None:
        while True:
            notify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _env_for(self, server: ServerConfig) -> Callable[[], dict[str, str]]:
        def extra_env() -> dict[str, str]:
            url = self.infra.redis_url() if self.infra is not None else None
            if url and "LUNA_REDIS_URL" not in server.env:
                return {"LUNA_REDIS_URL": url}
            return {}
        return extra_env

    # -- sessions -----------------------------------------------------------------------

    def _handler(self, host: ServerHost) -> Callable[[Peer], Session]:
        def factory(peer: Peer) -> Session:
            name = host.name
            session = Session(f"{name}-{next(self._ids)}", name,
                              traffic=self.metrics.traffic(name),
                              on_tool_call=self.metrics.tool_call_sink(name),
                              idle_timeout=host.config.idle_timeout,
                              first_frame_timeout=host.config.first_frame_timeout)
            self._spawn(self._serve(host, session))  # runs once connection_made is done
            return session
        return factory

    def make_pool(self, server: ServerConfig, **options: Any) -> Pool:
        """A pool for `server` with lunad's metrics and worker environment."""
        return Pool(server, metrics=self.metrics, extra_env=self._env_for(server), **options)

    def observe(self, server: str) -> dict[str, Any]:
        """What an Observer of `server`'s traffic reports into (the HTTP front's shared
        workers use it, as sessions do)."""
        return {"traffic": self.metrics.traffic(server),
                "on_tool_call": self.metrics.tool_call_sink(server)}

    def open_http_session(self, server: str) -> Session:
        """A session for the HTTP front, made and served exactly as a socket connection's:
        the caller attaches its transport (connection_made) before the loop runs again."""
        return self._handler(self.hosts[server])(None)  # type: ignore[arg-type]

    async def _serve(self, host: ServerHost, session: Session) -> None:
        name = host.name
        if host.state != SERVING:
            self.metrics.session_closed(name, "rejected", None)  # counted before the client hears
            await session.refuse(f"lunad: server {name!r} is {host.state} and accepts no new "
                                 "sessions", "draining")
            return
        host.sessions[session.id] = session
        worker = None
        try:
            try:
                worker = await host.pool.acquire()
            except (PoolExhausted, ServerUnavailable) as exc:
                reason = "pool_exhausted" if isinstance(exc, PoolExhausted) else "unavailable"
                log.warning("session %s refused: %s", session.id, exc)
                host.sessions.pop(session.id, None)
                self.metrics.session_closed(name, "rejected", None)
                await session.refuse(f"lunad: {exc}", reason)
                return
            except Exception as exc:  # a bug in the pool must still answer the client
                log.exception("session %s: acquiring a worker failed", session.id)
                host.sessions.pop(session.id, None)
                self.metrics.session_closed(name, "rejected", None)
                await session.refuse(f"lunad: internal error while getting a {name} worker: "
                                     f"{exc!r} (see lunad's log)", "internal_error")
                return
            self.metrics.session_attached(name, time.monotonic() - session.accepted)

            log.info("session %s bound to worker pid %s", session.id, worker.pid)

            def closed(outcome: str, seconds: float) -> None:
                host.sessions.pop(session.id, None)
                self.metrics.session_closed(name, outcome, seconds)
                log.info("session %s %s after %.1f s, %d tool call(s)", session.id, outcome,
                         seconds, session.observer.calls)

            await session.run(worker, host.pool, closed)
        except Exception:
            log.exception("session %s failed", session.id)
            host.sessions.pop(session.id, None)
            if session.transport is not None:
                session.transport.abort()
            if worker is not None:  # a failed session still gives its worker back (no-op
                # if it did already): else it stays busy for ever, holding a max_sessions slot
                await host.pool.release(worker, states.SESSION_END)
        finally:
            host.sessions.pop(session.id, None)

    @staticmethod
    def _log_containment(server: ServerConfig) -> None:
        """Probe the containment now (cached), not at the first spawn, and say what it is."""
        try:
            policy = containment.for_server(server)
        except containment.ContainmentError as exc:
            log.error("server %s: %s; its workers cannot start", server.name, exc)
            return
        log.info("server %s: containment %s%s", server.name, policy.describe(),
                 "" if policy.mode == containment.PIDNS else f"; not covered: {policy.gaps}")
        if policy.mode == containment.CGROUP:
            # Set up lunad's subtree (and sweep dead predecessors') now, before any worker.
            try:
                tree = cgroups.tree()
            except cgroups.CgroupError as exc:
                log.error("server %s: %s; its workers cannot start", server.name, exc)
                return
            log.info("cgroups: workers under %s, janitor pid %s%s", tree.workers,
                     tree.janitor_pid, "".join(f"; swept {p}" for p in tree.swept))

    # -- ControlTarget ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        infra = self.infra.status() if self.infra is not None else {
            "backend": "none", "services": {}}
        return {
            "daemon": {"pid": os.getpid(), "version": __version__,
                       "uptime": round(time.monotonic() - self.started, 3),
                       "runtime_dir": str(self.config.runtime_dir),
                       "state_dir": str(self.config.state_dir),
                       "metrics": self.metrics_address},
            "http": self.http.describe() if self.http is not None else None,
            "servers": {name: host.describe() for name, host in self.hosts.items()},
            "infra": infra,
        }

    def kill_session(self, session_id: str) -> dict[str, Any]:
        for host in self.hosts.values():
            session = host.sessions.get(session_id)
            if session is not None:
                session.stop("killed", "killed", f"lunad: session {session_id} was ended by "
                             "`luna kill`")
                return {"session": session_id, "killed": True}
        live = sorted(s for h in self.hosts.values() for s in h.sessions)
        raise ControlError(f"no session {session_id!r}; live sessions: "
                           f"{', '.join(live) or 'none'} (see `luna status`)")

    async def drain_server(self, server: str) -> dict[str, Any]:
        host = self.hosts.get(server)
        if host is None:
            raise ControlError(f"no server {server!r}; servers: {', '.join(self.hosts)}")
        host.state = DRAINING
        await host.pool.drain()
        return {"server": server, "state": host.state, "sessions": len(host.sessions)}

    # -- metrics view -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Taken on the loop thread by the metrics collector."""
        workers = [WorkerSample(name, w.slot, w.process)
                   for name, host in self.hosts.items() for w in host.pool.workers()]
        luna = self.config.servers.get("luna")
        luna_state = None
        if luna is not None:
            redis_url = self.infra.redis_url() if self.infra is not None else None
            luna_state = (luna.env.get("LUNA_MEMORY_PATH"), redis_url)
        return Snapshot(
            sessions_active={n: len(h.sessions) for n, h in self.hosts.items()},
            pools={n: h.pool.snapshot() for n, h in self.hosts.items()},
            workers=workers,
            infra=self.infra.status() if self.infra is not None else None,
            luna_state=luna_state,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lunad", description="Host stdio MCP servers.")
    parser.add_argument("--config", metavar="PATH",
                        help="TOML config (default: built-in defaults; see etc/luna.toml)")
    parser.add_argument("--log-level", default=os.environ.get("LUNA_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="lunad[%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"lunad: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(Daemon(config).run())
    except (StartError, paths.UnsafeDirectory, SocketInUse, runlock.AlreadyRunning,
            ValueError) as exc:
        print(f"lunad: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

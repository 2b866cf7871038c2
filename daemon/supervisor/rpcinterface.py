"""The `luna` XML-RPC namespace inside supervisord: luna.status, luna.kill, luna.drain.

Loaded by etc/supervisord.conf:

    [rpcinterface:luna]
    supervisor.rpcinterface_factory = daemon.supervisor.rpcinterface:make_luna_rpcinterface
    runtime_dir = /run/luna      ; where lunad's control.sock is
    timeout = 5                  ; seconds before a silent lunad is reported as not answering
    program = lunad              ; the [program:x] running lunad, named in "not running" errors

Each method forwards one request to lunad's control socket (exchange.py). supervisord is a single
select loop that also serves supervisorctl and the children's output, so a method waits at most
`fast_wait` (0.1 s) in place: lunad answers in milliseconds, so this is the usual path. If the
answer is slower, the method returns a supervisor "deferred" function that the HTTP channel polls
between other work until the answer or the timeout arrives; the loop is never held longer.

Answers are made XML-RPC-safe: XML-RPC has no None and only 32-bit integers, so None values are
dropped from dicts and out-of-range integers become strings. Failures are supervisor Faults:
NOT_RUNNING when lunad is not there, FAILED with lunad's own message when it refused the request
(an unknown session or server), BAD_ARGUMENTS for an empty name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.http import NOT_DONE_YET
from supervisor.states import getProcessStateDescription
from supervisor.xmlrpc import Faults, RPCError

from daemon import paths
from daemon.supervisor.exchange import ControlError, ControlExchange

API_VERSION = "1.0"
XMLRPC_INT_MIN, XMLRPC_INT_MAX = -(2**31), 2**31 - 1
DEFERRED_POLL_SECONDS = 0.05


def xmlrpc_safe(value: Any) -> Any:
    """`value` with None removed from dicts (None in a list becomes ""), big ints as strings."""
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if XMLRPC_INT_MIN <= value <= XMLRPC_INT_MAX else str(value)
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return {str(k): xmlrpc_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [xmlrpc_safe(v) for v in value]
    return str(value)


class LunaNamespaceRPCInterface:
    """Public methods become `luna.<name>` XML-RPC calls (supervisor hides `_` names)."""

    def __init__(self, supervisord: Any, *, runtime_dir: Path, timeout: float,
                 fast_wait: float = 0.1, program: str = "lunad") -> None:
        self.supervisord = supervisord
        self.runtime_dir = runtime_dir
        self.control_socket = paths.control_socket(runtime_dir)
        self.timeout = timeout
        self.fast_wait = fast_wait
        self.program = program

    def getAPIVersion(self) -> str:  # camelCase like supervisor's own namespaces
        """The version of the luna namespace's API."""
        return API_VERSION

    def status(self) -> Any:
        """lunad's status: daemon, servers (pool states, sessions), infra."""
        return self._ask({"cmd": "status"})

    def kill(self, session: str) -> Any:
        """End session `session` (an id from luna.status) now."""
        return self._ask({"cmd": "kill", "session": self._name("session", session)})

    def drain(self, server: str) -> Any:
        """Stop new sessions of `server`, let current ones finish, stop its idle workers."""
        return self._ask({"cmd": "drain", "server": self._name("server", server)})

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _name(what: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise RPCError(Faults.BAD_ARGUMENTS,
                           f"a {what} name is required (a non-empty string), got {value!r}")
        return value.strip()

    def _ask(self, request: dict[str, Any]) -> Any:
        try:
            exchange = ControlExchange(self.control_socket, request, timeout=self.timeout)
            answer = exchange.wait(self.fast_wait)
        except ControlError as exc:
            raise self._fault(exc) from exc
        if answer is not None:
            return self._result(answer)

        def deferred() -> Any:
            try:
                later = exchange.poll()
            except ControlError as exc:
                raise self._fault(exc) from exc
            return NOT_DONE_YET if later is None else self._result(later)

        # supervisor only defers plain functions (types.FunctionType) and reads their .delay.
        deferred.delay = DEFERRED_POLL_SECONDS  # type: ignore[attr-defined]
        return deferred

    def _result(self, answer: Mapping[str, Any]) -> Any:
        if answer.get("ok"):
            result = answer.get("result")
            return True if result is None else xmlrpc_safe(result)
        raise RPCError(Faults.FAILED, str(answer.get("error") or "lunad refused the request "
                                          "without saying why"))

    def _fault(self, exc: ControlError) -> RPCError:
        if not exc.unavailable:
            return RPCError(Faults.FAILED, str(exc))
        return RPCError(Faults.NOT_RUNNING, f"{exc}; {self._hint()}")

    def _hint(self) -> str:
        """What to do about an unreachable lunad, from its state as supervisord sees it."""
        state = self._program_state()
        if state is None:
            return (f"supervisord runs no program named {self.program!r}; check [program:lunad] "
                    "and `program =` in [rpcinterface:luna]")
        if state in ("STARTING", "BACKOFF"):
            return (f"supervisord has {self.program} {state}: it is starting, or exiting at once "
                    f"(see `supervisorctl tail {self.program}`)")
        if state == "RUNNING":
            return (f"supervisord has {self.program} RUNNING, so it may still be opening its "
                    f"sockets, or runs with another runtime dir than {self.runtime_dir}")
        return (f"supervisord has {self.program} {state}; start it with "
                f"`supervisorctl start {self.program}`")

    def _program_state(self) -> str | None:
        """lunad's state as supervisord sees it, to tell "stopped" from "stuck" in errors."""
        groups = getattr(self.supervisord, "process_groups", None) or {}
        group = groups.get(self.program)
        process = group.processes.get(self.program) if group is not None else None
        return getProcessStateDescription(process.get_state()) if process is not None else None


def make_luna_rpcinterface(supervisord: Any, runtime_dir: str | None = None,
                           timeout: str = "5", fast_wait: str = "0.1",
                           program: str = "lunad") -> LunaNamespaceRPCInterface:
    """supervisor.rpcinterface_factory for `[rpcinterface:luna]`; options arrive as strings."""
    floats: dict[str, float] = {}
    for key, text in (("timeout", timeout), ("fast_wait", fast_wait)):
        try:
            floats[key] = float(text)
        except ValueError:
            raise ValueError(f"[rpcinterface:luna] {key} = {text!r}: expected seconds as a "
                             "number, e.g. 5") from None
        if not 0 < floats[key] <= 60:
            raise ValueError(f"[rpcinterface:luna] {key} = {text!r}: expected seconds in (0, 60]")
    # The section's value wins over the environment: the rendered config names the directory
    # it also gives lunad, and supervisord's own environment may say something else.
    where = Path(runtime_dir) if runtime_dir else paths.runtime_dir()
    return LunaNamespaceRPCInterface(supervisord, runtime_dir=where, timeout=floats["timeout"],
                                     fast_wait=min(floats["fast_wait"], floats["timeout"]),
                                     program=program)


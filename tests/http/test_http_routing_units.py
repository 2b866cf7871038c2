"""The 2026-07-28 routing policy without processes (daemon/http/routing.py, the shared
worker choice in daemon/http/modern.py, and a shared worker's answers in shared.py)."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from daemon.http import modern as modern_module
from daemon.http import routing
from daemon.http.modern import ModernWorkers, choose
from daemon.http.shared import SharedWorker, readdressed

SUB = routing.SUBSCRIPTION_ID


@dataclass
class Req:
    listen: bool = False
    logs: bool = False


def note(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


IN_FLIGHT = {1: Req(), 2: Req(logs=True), 3: Req(listen=True), 4: Req(listen=True)}


@pytest.mark.parametrize(("message", "owner"), [
    (note("notifications/progress", progressToken="luna-1", progress=1), 1),
    (note("notifications/progress", progressToken="theirs", progress=1), None),
    (note("notifications/subscriptions/acknowledged", _meta={SUB: 3}), 3),
    (note("notifications/tools/list_changed", _meta={SUB: 4}), 4),
    (note("notifications/tools/list_changed", _meta={SUB: 1}), None),  # not a listen
    (note("notifications/tools/list_changed", _meta={SUB: "3"}), None),  # not our id
    (note("notifications/custom"), None),  # two ordinary requests: ambiguous
    (note("notifications/message", level="info", data="x"), 2),  # the one that asked
])
def test_owner(message: dict[str, Any], owner: int | None) -> None:
    assert routing.owner(message, IN_FLIGHT, {"luna-1": 1}) == owner


def test_owner_logs_and_other_notifications_need_one_candidate() -> None:
    two_logging = {1: Req(logs=True), 2: Req(logs=True)}
    assert routing.owner(note("notifications/message", data="x"), two_logging, {}) is None
    # An unattributed notification goes to the only ordinary request, listens aside.
    one = {1: Req(), 3: Req(listen=True)}
    assert routing.owner(note("notifications/custom"), one, {}) == 1
    assert routing.owner(note("notifications/custom"), {3: Req(listen=True)}, {}) is None


def test_restamp_and_states() -> None:
    message = note("notifications/resources/updated", uri="u", _meta={SUB: 7, "k": 1})
    routing.restamp(message, "listen-1")
    assert message["params"]["_meta"] == {SUB: "listen-1", "k": 1}
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"resultType": "complete", "_meta": {SUB: 7}}}
    routing.restamp(answer, "listen-1")
    assert answer["result"]["_meta"] == {SUB: "listen-1"}
    assert routing.issued_state({"result": {"resultType": "input_required",
                                            "requestState": "s"}}) == "s"
    assert routing.issued_state({"result": {"resultType": "complete", "requestState": "s"}}) \
        is None
    assert routing.echoed_state({"params": {"requestState": "s"}}) == "s"
    assert routing.wants_logs({"params": {"_meta": {routing.LOG_LEVEL: "info"}}})
    assert not routing.wants_logs({"params": {"_meta": {}}})
    # A listen stream never carries log messages: it must not take the log slot.
    assert not routing.wants_logs({"method": routing.LISTEN,
                                   "params": {"_meta": {routing.LOG_LEVEL: "info"}}})


@dataclass
class Worker:
    in_flight: dict[int, Any]
    log_busy: bool = False
    alive: bool = True
    states: OrderedDict[str, None] = field(default_factory=OrderedDict)


def test_choose() -> None:
    a, b = Worker({1: 0}), Worker({})
    a.states["sealed-by-a"] = None
    assert choose([a, b], logs=False, state=None) is b  # fewest in flight
    assert choose([a, b], logs=False, state="sealed-by-a") is a  # back to its issuer
    assert choose([a, b], logs=False, state="unknown") is b
    b.log_busy = True
    assert choose([a, b], logs=True, state=None) is a  # the free log slot
    a.log_busy = True
    assert choose([a, b], logs=True, state=None) is None  # wait for one
    assert choose([a, b], logs=False, state=None) is b  # others are not held up
    a.alive = False
    assert choose([a, b], logs=False, state="sealed-by-a") is b  # issuer gone: any


class SlotWorker(Worker):
    def reserve_logs(self) -> None:
        self.log_busy = True


def _modern(workers: list[Any]) -> Any:
    """A ModernWorkers over fake shared workers: pick() needs only these attributes."""
    modern = ModernWorkers.__new__(ModernWorkers)
    modern.shared = {"s": workers}
    modern._ready = {"s": asyncio.Event()}
    modern._ready["s"].set()
    modern._log_waiters = {"s": []}
    return modern


def test_pick_waits_for_a_log_slot_then_goes_anyway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modern_module, "WAIT", 0.3)
    worker = SlotWorker({1: 0}, log_busy=True)
    modern = _modern([worker])

    async def freed_soon() -> tuple[Any, bool]:
        async def free() -> None:
            await asyncio.sleep(0.05)
            worker.log_busy = False
            modern._wake("s")
        task = asyncio.create_task(free())
        got = await modern.pick("s", logs=True)
        await task
        return got

    assert asyncio.run(freed_soon()) == (worker, True)  # the freed slot, now reserved
    assert worker.log_busy
    # Never freed: after WAIT the request goes anyway, without the slot (never a 503).
    assert asyncio.run(modern.pick("s", logs=True)) == (worker, False)
    assert asyncio.run(modern.pick("s", logs=False)) == (worker, False)


# -- a shared worker's answers, readdressed to the client ------------------------------


@pytest.mark.parametrize("client_id", [7, "abc", 'qu"ote é', 2.0])
def test_readdressed_splices_the_client_id_into_an_sdk_shaped_answer(client_id: Any) -> None:
    frame = b'{"jsonrpc":"2.0","id":41,"result":{"content":[],"id":41}}'
    spliced = readdressed(frame, 41, client_id)
    assert spliced is not None
    assert json.loads(spliced) == {"jsonrpc": "2.0", "id": client_id,
                                   "result": {"content": [], "id": 41}}


@pytest.mark.parametrize("frame", [
    b'{"jsonrpc": "2.0", "id": 41, "result": {}}',  # spaced: not the SDK's shape
    b'{"id":41,"jsonrpc":"2.0","result":{}}',       # another key order
    b'{"jsonrpc":"2.0","id":411,"result":{}}',      # another id that begins alike
])
def test_readdressed_leaves_other_shapes_to_a_full_encode(frame: bytes) -> None:
    assert readdressed(frame, 41, "abc") is None


class _Stdin:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.frames.append(json.loads(data))


def _shared(calls: list[tuple[str, str]]) -> tuple[SharedWorker, _Stdin]:
    stdin = _Stdin()
    worker = SimpleNamespace(pid=0, stdin=SimpleNamespace(transport=stdin),
                             stdout=asyncio.StreamReader())
    shared = SharedWorker("conf", worker,
                          on_tool_call=lambda tool, outcome, _s: calls.append((tool, outcome)))
    shared.observer.traffic.tools.learn(["add"])
    return shared, stdin


@pytest.mark.parametrize("answer", [
    b'{"jsonrpc":"2.0","id":%d,"result":{"isError":false,"content":[]}}\n',  # the SDK's
    b'{"result": {"isError": false, "content": []}, "jsonrpc": "2.0", "id": %d}\n',
])
def test_shared_worker_answers_under_the_client_id_and_counts_the_call(answer: bytes) -> None:
    async def run() -> None:
        calls: list[tuple[str, str]] = []
        shared, stdin = _shared(calls)
        stream = shared.send({"jsonrpc": "2.0", "id": "c-1", "method": "tools/call",
                              "params": {"name": "add", "arguments": {}}})
        ours = stdin.frames[0]["id"]
        assert ours != "c-1"
        shared._data(answer % ours)
        assert json.loads(stream.response or b"") == {
            "jsonrpc": "2.0", "id": "c-1", "result": {"isError": False, "content": []}}
        assert stream.finished and not shared.in_flight
        await asyncio.sleep(0)  # the observer counts once the answer is on its way
        assert calls == [("add", "ok")]
        assert shared.observer.traffic.messages_out == 1

    asyncio.run(run())

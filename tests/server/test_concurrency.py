"""One Luna for every session: concurrent cycles and stores from 8 OS processes lose nothing,
with Redis and with files alone. The φ case goes through 8 real `luna-server` processes and
the mcp client; the store case drives the store layer from 8 spawned processes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import anyio
import pytest
import redis

from luna_server.consciousness import raw_phi
from luna_server.service import Luna
from luna_server.store.files import read_lines
from luna_server.store.layout import FOLDERS, TYPES
from tests.server.helpers import all_json_readable, luna_session, text_of
from tests.server.workers import phi_text, store_many, track_many

PROCESSES = 8
CALLS = 50
STORES = 200


@pytest.fixture(params=["files", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("redis_url") if request.param == "redis" else ""


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_400_concurrent_cycles_from_8_servers(tmp_path: Path,
                                                    backend: str) -> None:
    memory = tmp_path / "memory"
    errors: list[str] = []

    async def one_server(worker: int) -> None:
        async with luna_session(memory, backend) as session:
            async def one_call(call: int) -> None:
                result = await session.call_tool("phi_consciousness_calculate",
                                                  {"interaction_context": phi_text(worker, call)})
                if result.is_error:
                    errors.append(text_of(result))
            async with anyio.create_task_group() as calls:
                for call in range(CALLS):
                    calls.start_soon(one_call, call)

    async with anyio.create_task_group() as servers:
        for worker in range(PROCESSES):
            servers.start_soon(one_server, worker)
    assert errors == []
    state = json.loads((memory / "consciousness_state.json").read_text())
    history = state["history"]
    assert len(history) == PROCESSES * CALLS
    expected_raws = sorted(raw_phi(phi_text(w, c)) for w in range(PROCESSES)
                           for c in range(CALLS))
    assert sorted(entry["raw"] for entry in history) == expected_raws
    phi = 1.0  # replay: every cycle must have started from the previous one's φ
    for entry in history:
        phi = 0.7 * phi + 0.3 * entry["raw"]
        assert entry["phi_value"] == phi
    assert state["phi"] == phi
    if backend:
        prefix = Luna(memory, backend).redis.prefix  # type: ignore[union-attr]
        mirrored = json.loads(redis.Redis.from_url(backend).get(f"{prefix}state:consciousness"))
        assert mirrored["phi"] == phi and len(mirrored["history"]) == PROCESSES * CALLS


@pytest.mark.timeout(180)
def test_1600_concurrent_stores_from_8_processes(tmp_path: Path, backend: str) -> None:
    memory = tmp_path / "memory"
    flushes = 0
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(store_many, str(memory), backend, w, STORES)
                   for w in range(PROCESSES)]
        if backend:
            # Redis flushed mid-run, repeatedly: nothing may be lost, the index comes back
            client = redis.Redis.from_url(backend)
            while True:
                time.sleep(0.3)
                client.flushall()
                flushes += 1
                if all(f.done() for f in futures):
                    break
        acknowledged = [mid for f in futures for mid in f.result()]
    assert flushes >= (1 if backend else 0)
    assert len(set(acknowledged)) == PROCESSES * STORES
    assert all_json_readable(memory) == []
    luna = Luna(memory, backend)
    assert (luna.redis is not None) == bool(backend)
    for memory_type in TYPES:
        folder = memory / FOLDERS[memory_type]
        expected = {m for m in acknowledged if m.startswith(memory_type + "_")}
        index = json.loads((folder / "index.json").read_text())
        assert index["count"] == len(index["memories"]) == len(expected) == 400
        assert set(index["memories"]) == expected
        catalog = [e["id"] for e in read_lines(folder / "catalog.jsonl")]
        assert len(catalog) == len(set(catalog)) and set(catalog) == expected
        assert {p.stem for p in folder.glob(f"{memory_type}_*.json")} == expected
    newest = luna.memory.retrieve("shared").top
    assert len(newest) == 10 and newest == luna.memory.search_files("shared").top
    assert len({e["id"] for e in luna.memory.entries()}) == PROCESSES * STORES
    for worker, i in [(0, 0), (3, 117), (7, 199)]:
        hits = luna.memory.retrieve(f"unique{worker}x{i}").top
        assert [h.content for h in hits] == [f"worker{worker} item{i} unique{worker}x{i} shared"]
    if backend:
        assert luna.memory.redis_ready()
        client = redis.Redis.from_url(backend)
        prefix = luna.redis.prefix  # type: ignore[union-attr]
        assert client.scard(f"{prefix}tok:shared") == PROCESSES * STORES
        assert sum(client.scard(f"{prefix}type:{t}") for t in TYPES) == PROCESSES * STORES


@pytest.mark.timeout(120)
def test_concurrent_co_evolution_records_and_baselines(tmp_path: Path, backend: str) -> None:
    memory = tmp_path / "memory"
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        done = sum(pool.map(track_many, [str(memory)] * 4, [backend] * 4, range(4), [20] * 4))
    saved = json.loads((memory / "co_evolution_history.json").read_text())
    history = saved["history"]
    assert done == len(history) == 80
    # replay: each record moved the baselines 10% toward its values, in history order
    baselines: dict[str, float] = {}
    for record in history:
        for metric, value in {**record["user_metrics"], **record["luna_metrics"]}.items():
            baselines[metric] = 0.9 * baselines.get(metric, 0.5) + 0.1 * value
    assert saved["baselines"] == baselines

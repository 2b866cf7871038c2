"""The shared state of the one Luna: consciousness and co-evolution, across all processes.

Every update is a read-modify-write done while holding the state's file lock: read the file
(the truth), apply a pure function, write the file atomically, mirror the result to Redis, and
only then release the lock. Two sessions updating at once are applied one after the other; a
process killed mid-update leaves the old file, and the kernel drops its lock.

Reads take the Redis copy when the index is ready (not flagged stale), else the file. A file
that cannot be parsed (never written by us: our writes are atomic) is moved aside as
`<name>.unreadable-<time>` before the first update replaces it, so nothing is silently lost.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from luna_server.coevolution import CoEvolutionHistory
from luna_server.consciousness import ConsciousnessState
from luna_server.store.files import atomic_write_json, file_lock, private_dir, read_json
from luna_server.store.layout import COEVOLUTION_FILE, CONSCIOUSNESS_FILE, lock_path
from luna_server.store.redis_index import RedisIndex, RedisUnavailable, flag_redis_stale
from luna_server.timeutil import iso_now

log = logging.getLogger("luna_server.store")
T = TypeVar("T")
CONSCIOUSNESS = "consciousness"
COEVOLUTION = "coevolution"
FILES = {CONSCIOUSNESS: CONSCIOUSNESS_FILE, COEVOLUTION: COEVOLUTION_FILE}


class SharedState:
    def __init__(self, root: Path, redis_index: RedisIndex | None = None,
                 redis_ready: Callable[[], bool] | None = None) -> None:
        self.root = root
        self.redis = redis_index
        self._redis_ready = redis_ready or (lambda: False)

    def _path(self, name: str) -> Path:
        return self.root / FILES[name]

    def _read_file(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            data = read_json(path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("state file %s is unreadable (%s); starting from defaults", path, exc)
            return {"__unreadable__": True}
        return data if isinstance(data, dict) else {"__unreadable__": True}

    def _read(self, name: str) -> dict[str, Any]:
        if self.redis is not None and self._redis_ready():
            try:
                text = self.redis.get_state(name)
                if text is not None:
                    return json.loads(text)
            except (RedisUnavailable, ValueError):
                pass
        return self._read_file(name)

    def _update(self, name: str, apply: Callable[[dict[str, Any]], tuple[dict[str, Any], T]],
                ) -> T:
        path = self._path(name)
        private_dir(self.root)
        with file_lock(lock_path(self.root, name)):
            current = self._read_file(name)
            if current.pop("__unreadable__", False):
                os.replace(path, path.with_name(f"{path.name}.unreadable-{iso_now()}"))
            new, result = apply(current)
            atomic_write_json(path, new)
            if self.redis is None:
                flag_redis_stale(self.root)
            else:
                try:
                    self.redis.set_state(name, json.dumps(new))
                except RedisUnavailable:
                    self.redis.flag_stale()
        return result

    def file_texts(self) -> dict[str, str]:
        """The state files as JSON texts, for the Redis mirror's rebuild."""
        return {name: json.dumps(self._read_file(name)) for name in FILES
                if self._path(name).exists()}

    # -- consciousness ------------------------------------------------------------------
    def consciousness(self) -> ConsciousnessState:
        return ConsciousnessState.from_dict(self._read(CONSCIOUSNESS))

    def update_consciousness(
            self, apply: Callable[[ConsciousnessState], tuple[ConsciousnessState, T]]) -> T:
        def step(data: dict[str, Any]) -> tuple[dict[str, Any], T]:
            new, result = apply(ConsciousnessState.from_dict(data))
            return {**new.to_dict(), "updated": iso_now()}, result
        return self._update(CONSCIOUSNESS, step)

    # -- co-evolution -------------------------------------------------------------------
    def coevolution(self) -> CoEvolutionHistory:
        return CoEvolutionHistory.from_dict(self._read(COEVOLUTION))

    def update_coevolution(
            self, apply: Callable[[CoEvolutionHistory], tuple[CoEvolutionHistory, T]]) -> T:
        def step(data: dict[str, Any]) -> tuple[dict[str, Any], T]:
            new, result = apply(CoEvolutionHistory.from_dict(data))
            return new.to_dict(iso_now()), result
        return self._update(COEVOLUTION, step)

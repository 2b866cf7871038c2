"""Code that runs in the child processes of the concurrency and durability tests."""

from __future__ import annotations

import sys

from luna_server.service import Luna
from luna_server.store.layout import TYPES


def store_many(memory: str, redis_url: str, worker: int, count: int) -> list[str]:
    """Store `count` memories from one OS process; returns the acknowledged ids."""
    luna = Luna(memory, redis_url)
    ids = []
    for i in range(count):
        record = luna.memory.store(TYPES[(worker + i) % 4],
                                   f"worker{worker} item{i} unique{worker}x{i} shared", {})
        ids.append(record["id"])
    return ids


def track_many(memory: str, redis_url: str, worker: int, count: int) -> int:
    """Record `count` co-evolution interactions from one OS process."""
    luna = Luna(memory, redis_url)
    for i in range(count):
        luna.co_evolution_track(f"why {'how ' * (worker % 3)}phi? worker {worker} call {i}")
    return count


def phi_text(worker: int, call: int) -> str:
    """A distinct text per call, with a distinct raw φ for most of them."""
    words = " ".join(f"w{worker}_{call}_{k}" for k in range(5 + (call % 40)))
    return words + " ?" * (1 + worker % 5)


def store_until_killed(memory: str) -> None:
    """Store memories and run cycles forever, printing each acknowledgement as it happens."""
    luna = Luna(memory)
    print("ready", flush=True)
    i = 0
    while True:
        record = luna.memory.store(TYPES[i % 4], f"durable memory number {i}", {"i": i})
        print(f"stored {record['id']}", flush=True)
        luna.phi_consciousness_calculate(f"cycle {i}? really?")
        print("cycle", flush=True)
        i += 1


if __name__ == "__main__":
    store_until_killed(sys.argv[1])

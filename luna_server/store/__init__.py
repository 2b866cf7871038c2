"""Luna's storage: files under LUNA_MEMORY_PATH are the truth; Redis, when configured, is a
rebuildable index and a shared hot copy of the state.

- `files`: atomic writes, locks, append-only catalogs.
- `layout`: where things live in the memory directory.
- `legacy`: reading memory folders written by the original server (read-only).
- `memory`: storing and retrieving memories (file path and Redis path).
- `redis_index`: the Redis token index, its rebuild, the state mirror.
- `state`: the shared consciousness and co-evolution state, serialized across processes.
"""

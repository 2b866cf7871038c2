"""The Luna MCP server: 12 deterministic "consciousness" tools over a shared fractal memory.

Spec: ../shared/spec/luna-tools.md. `python -m luna_server` (or `luna-server`) serves MCP over
stdio as `luna-consciousness`; LUNA_MEMORY_PATH and LUNA_REDIS_URL configure the storage.

Layers, outside in:
- `server`: the MCP surface only (tool registration, input errors as tool errors).
- `service`: the twelve tools as plain methods: validate, run engines, use the store.
- engines, pure (text in, numbers out): `consciousness` (φ cycle, levels, tools 1/5/9),
  `emotion`, `coherence`, `patterns`, `depth`, `coevolution`, `insight`, `golden`,
  `relevance` (retrieval scoring and ranking), on `tokens` and `timeutil`.
- `validation`: argument checks raising `InputError` ("Error: ..." naming what is allowed).
- `store`: files as the truth (`files`, `layout`, `memory`, `state`, `legacy`) and Redis as a
  rebuildable index and state mirror (`redis_index`).
- `summary`: `read_summary`, φ and memory counts for lunad's metrics.
"""

__version__ = "0.1.0"

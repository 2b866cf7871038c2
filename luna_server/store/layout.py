"""Where everything lives in a memory directory (LUNA_MEMORY_PATH).

```
<memory>/
  roots/ branches/ leaves/ seeds/      one folder per memory type
    <type>_<12 hex>.json               one memory (the truth)
    index.json                         type, updated, count, memories (ids, insertion order)
    catalog.jsonl                      id, type, created, content per memory, append-only:
                                       what retrieval reads instead of every memory file
  branchs/ leafs/                      legacy folders of the original server, read only
  consciousness_state.json             shared consciousness state
  co_evolution_history.json            shared co-evolution history and baselines
  .locks/                              flock files
  .redis-stale                         present while Redis may lack an update (see redis_index)
```
"""

from __future__ import annotations

import os
from pathlib import Path

TYPES = ("root", "branch", "leaf", "seed")
FOLDERS = {"root": "roots", "branch": "branches", "leaf": "leaves", "seed": "seeds"}
LEGACY_FOLDERS = {"branch": "branchs", "leaf": "leafs"}
CONSCIOUSNESS_FILE = "consciousness_state.json"
COEVOLUTION_FILE = "co_evolution_history.json"
INDEX_FILE = "index.json"
CATALOG_FILE = "catalog.jsonl"
STALE_FLAG = ".redis-stale"


def default_memory_path() -> Path:
    """LUNA_MEMORY_PATH, else the user's data dir: $XDG_DATA_HOME/luna/memory."""
    env = os.environ.get("LUNA_MEMORY_PATH")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "luna" / "memory"


def resolve(memory_path: str | Path | None) -> Path:
    return Path(memory_path).expanduser() if memory_path else default_memory_path()


def lock_path(root: Path, name: str) -> Path:
    return root / ".locks" / f"{name}.lock"


def memory_type_of(memory_id: str) -> str | None:
    prefix = memory_id.split("_", 1)[0]
    return prefix if prefix in TYPES else None

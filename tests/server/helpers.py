"""Helpers shared by the Luna server tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

# A copy of ../shared/fixtures/legacy-memory (the original server's layout, truncated file
# included), kept in the repo so the tests are self-contained.
LEGACY_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy-memory"

LEGACY_IDS = {"root_3f2a9c1d7e44", "root_a81b0c5f9d12", "branch_5c7e1a2b3d4f",
              "branch_9d8c7b6a5f4e", "leaf_6f5e4d3c2b1a", "leaf_0a1b2c3d4e5f",
              "seed_4fcfd1b2b446"}
# one word from each of the seven readable legacy memories
LEGACY_QUERY = "golden fractal fibonacci emergence weather phi"


def copy_legacy(tmp_path: Path) -> Path:
    target = tmp_path / "legacy-memory"
    shutil.copytree(LEGACY_FIXTURE, target)
    return target


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (relative path → sha256): to prove nothing was touched."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def all_json_readable(root: Path) -> list[str]:
    """Paths of .json files under root that do not parse (should be empty)."""
    bad = []
    for path in root.rglob("*.json"):
        try:
            json.loads(path.read_bytes())
        except ValueError:
            bad.append(str(path))
    return bad


# -- MCP stdio sessions against real server processes -------------------------------------
LUNA_SERVER = str(Path(sys.executable).with_name("luna-server"))


def server_params(memory: Path, redis_url: str | None = None,
                  console_script: bool = False) -> StdioServerParameters:
    env = {"LUNA_MEMORY_PATH": str(memory)}
    if redis_url:
        env["LUNA_REDIS_URL"] = redis_url
    if console_script:
        return StdioServerParameters(command=LUNA_SERVER, args=[], env=env)
    return StdioServerParameters(command=sys.executable, args=["-m", "luna_server"], env=env)


@contextlib.asynccontextmanager
async def luna_session(memory: Path, redis_url: str | None = None, *,
                       errlog: IO[str] | None = None,
                       console_script: bool = False) -> AsyncIterator[ClientSession]:
    params = server_params(memory, redis_url, console_script)
    async with stdio_client(params, errlog=errlog or sys.stderr) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    assert len(result.content) == 1
    return result.content[0].text

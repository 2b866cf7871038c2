"""The MCP surface: the `luna-consciousness` stdio server and its twelve tools, nothing else.

Each tool is registered from `service.TOOLS` with string parameters that all have defaults,
so the input schema has no `required` list (clients of the original server send strings and
omit what they like). Before the SDK validates arguments, `call_tool` checks that every argument
is a known parameter and a string, so a wrong type gets our clear "Error: ..." text rather than
a pydantic dump. An `InputError` becomes a `ToolError` whose text, unprefixed, reaches the
client with `isError: true`.
"""

from __future__ import annotations

import errno
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

from luna_server import __version__
from luna_server.service import TOOLS, Luna, ToolSpec
from luna_server.stdio import run_stdio
from luna_server.validation import InputError, known_arguments

SERVER_NAME = "luna-consciousness"
INSTRUCTIONS = ("Luna: deterministic consciousness heuristics over a fractal memory shared by "
                "every session. All parameters are strings.")
SPECS = {spec.name: spec for spec in TOOLS}


def no_space_message(root: Path, exc: OSError) -> str:
    """The client's text when the memory's file system is full (or the quota used up)."""
    what = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    where = exc.filename or root
    return (f"Error: {what} holding Luna's memory ({where}); the call did not complete. "
            f"Free some space on the file system of {root}, then call it again")


def tool_function(server: LunaServer, spec: ToolSpec) -> Callable[..., str]:
    """A function whose signature is the tool's parameters (all `str`, with defaults).

    It calls the method of `server.luna` at call time, not of a Luna bound now: a server can
    be built before its Luna exists (see LunaServer).
    """

    @functools.wraps(getattr(Luna, spec.name))
    def call(**arguments: str) -> str:
        if server.luna is None:
            raise ToolError("Error: the Luna server has no memory attached (internal error)")
        try:
            return getattr(server.luna, spec.name)(**arguments)
        except InputError as exc:
            raise ToolError(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ToolError(no_space_message(server.luna.root, exc)) from exc
            raise

    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=str)
         for name, default in spec.params],
        return_annotation=str,
    )
    call.__annotations__ = {name: str for name, _ in spec.params} | {"return": str}
    return call


class LunaServer(MCPServer[Any]):
    """The MCP server. Built without a Luna (no files, no Redis), it holds only the tools'
    schemas, the costly part of building it (pydantic models): a preloading template builds
    it once and each forked worker attaches its own Luna (luna_server/__main__.py)."""

    def __init__(self, luna: Luna | None = None) -> None:
        super().__init__(name=SERVER_NAME, version=__version__, instructions=INSTRUCTIONS)
        self.luna = luna
        for spec in TOOLS:
            self.add_tool(tool_function(self, spec), name=spec.name,
                          description=spec.description, structured_output=False)

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        spec = SPECS.get(name)
        if spec is not None:
            try:
                known_arguments(name, arguments, [param for param, _ in spec.params])
            except InputError as exc:
                raise ToolError(str(exc)) from None
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            # The SDK prefixes "Error executing tool <name>: "; our input errors must start
            # with "Error:" so clients (and people) read the parameter and what is allowed.
            cause = exc.__cause__
            if isinstance(cause, ToolError) and str(cause).startswith("Error:"):
                raise cause from None
            raise

    async def run_stdio_async(self) -> None:
        # The SDK's transport, screened: a request it cannot read still gets an answer.
        await run_stdio(self)


def build_server(luna: Luna | None = None) -> LunaServer:
    return LunaServer(luna or Luna())

"""An everything-style stdio MCP server: what the MCP conformance suite's server scenarios
call, plus a few tools the HTTP front's own tests use.

lunad runs it as a worker (stdio) and the suite talks to it through lunad's HTTP front
(tests/http/test_conformance.py), in both wire eras: the SDK server serves, per process, the
era of the first request it sees (the pool's ping: 2025-11-25 sessions; the front's
server/discover probe: 2026-07-28 requests). Built on the `mcp` SDK's MCPServer; names and
answers follow the suite's scenarios (tools `test_*`, resources `test://...`, prompts
`test_*`).

Tools for lunad's tests: `add`, `pid` (which worker answered), `sleep` (stays in flight),
`crash` (the worker exits without answering), `progress`. `server.py --http PORT` serves the
same code with the SDK's own Streamable HTTP transport instead (bench/bench_http.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Annotated, Any

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

# A 1x1 PNG and a tiny WAV: the smallest valid payloads for image/audio content.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5E"
       "rkJggg==")
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

app = MCPServer(
    name="luna-conformance-server", version="1.0.0",
    # Sealed requestState (2026-07-28 multi round-trip): a fixed test key, 32+ bytes, unless
    # CONF_EPHEMERAL_STATE is set: then the SDK's default, a key only this process holds
    # (what lunad's routing must cope with when several processes serve one server).
    request_state_security=None if os.environ.get("CONF_EPHEMERAL_STATE") else
    RequestStateSecurity(keys=[b"luna-conformance-request-state-key!"]),
)
subscriptions: set[str] = set()


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


# ---------------------------------------------------------------- lunad's own test tools

@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def pid() -> int:
    """The process id of the worker that answers, as lunad sees it: the first NSpid entry
    (the outermost PID namespace whose /proc we see), since lunad may start its workers
    in a PID namespace of their own, where os.getpid() is a small number."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return os.getpid()


@app.tool()
async def sleep(seconds: float) -> str:
    """Wait, then answer (a request that stays in flight)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@app.tool()
async def log(tag: str, count: int, ctx: Context) -> str:
    """Send `count` log messages naming `tag`, pausing between them (so concurrent calls
    interleave on the worker's stdout), then answer."""
    for i in range(count):
        await ctx.info(f"{tag} {i}")
        await asyncio.sleep(0.02)
    return f"{tag} logged {count}"


@app.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Announce a change: tools list changed and resource `uri` updated (to the
    subscriptions/listen streams of this process that asked for them)."""
    await ctx.notify_tools_changed()
    await ctx.notify_resource_updated(uri)
    return f"touched {uri}"


@app.tool()
def crash() -> str:
    """The worker exits at once, with code 3, without answering."""
    os._exit(3)


@app.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report `steps` progress notifications, then answer."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"{steps} steps"


# ---------------------------------------------------------------- content

@app.tool()
def test_simple_text() -> str:
    """Answers one text content."""
    return "This is a simple text response for testing."


@app.tool()
def test_image_content() -> list[ImageContent]:
    """Answers one image content."""
    return [ImageContent(type="image", data=PNG, mime_type="image/png")]


@app.tool()
def test_audio_content() -> list[AudioContent]:
    """Answers one audio content."""
    return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


@app.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Answers one embedded text resource."""
    return [EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain",
        text="This is an embedded resource content."))]


@app.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Answers text, image and resource content together."""
    return [text("Multiple content types test:"),
            ImageContent(type="image", data=PNG, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=TextResourceContents(
                uri="test://mixed-content-resource", mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123})))]


@app.tool()
def test_error_handling() -> str:
    """Fails: the answer is a tool error (isError)."""
    raise RuntimeError("This tool intentionally returns an error for testing")


# ---------------------------------------------------------------- notifications

@app.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three log messages while it runs."""
    for message in ("Tool execution started", "Tool processing data",
                    "Tool execution completed"):
        await ctx.info(message)
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


@app.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50, 100 of 100; answers the progress token it got."""
    for done in (0, 50, 100):
        await ctx.report_progress(progress=done, total=100,
                                  message=f"Completed step {done} of 100")
        await asyncio.sleep(0.05)
    meta = ctx.request_context.meta if ctx.request_context else None
    return str(meta.get("progress_token") if meta else 0)


@app.tool()
async def test_reconnection(ctx: Context) -> str:
    """Logs, pauses, logs again (over stdio there is no SSE stream of its own to close)."""
    await ctx.info("Before disconnect")
    await asyncio.sleep(0.2)
    await ctx.info("After reconnect")
    return "Reconnection test completed"


# ---------------------------------------------------------------- server -> client requests

@app.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's LLM (sampling/createMessage)."""
    try:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=text(prompt))], max_tokens=100,
            related_request_id=ctx.request_id)
    except Exception as exc:
        return f"Sampling not supported or error: {exc}"
    answer = result.content.text if result.content.type == "text" else "No response"
    return f"LLM response: {answer}"


class Reply(BaseModel):
    response: str = Field(description="User's response")


@app.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user (elicitation/create) for one string."""
    try:
        result = await ctx.elicit(message=message, schema=Reply)
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"User response: action={result.action}, content={content}"


class Defaults(BaseModel):
    """Every primitive type with a default (SEP-1034)."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(default="active", description="User status",
                        json_schema_extra={"enum": ["active", "inactive", "pending"]})
    verified: bool = Field(default=True, description="Verification status")


@app.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicitation whose schema has a default for every primitive type."""
    try:
        result = await ctx.elicit(message="Please provide user information", schema=Defaults)
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"Elicitation result: action={result.action}, content={content}"


def _options(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in pairs]


class Enums(BaseModel):
    """The enum shapes of SEP-1330."""

    untitledSingle: str = Field(description="Simple enum without titles",
                                json_schema_extra={"enum": ["active", "inactive", "pending"]})
    titledSingle: str = Field(description="Enum with titled options (oneOf)",
                              json_schema_extra={"oneOf": _options(
                                  ("low", "Low Priority"), ("medium", "Medium Priority"),
                                  ("high", "High Priority"))})
    untitledMulti: list[str] = Field(description="Multi-select without titles",
                                     json_schema_extra={"items": {
                                         "type": "string",
                                         "enum": ["read", "write", "execute"]}})
    titledMulti: list[str] = Field(description="Multi-select with titled options",
                                   json_schema_extra={"items": {"anyOf": _options(
                                       ("feature", "New Feature"), ("bug", "Bug Fix"),
                                       ("docs", "Documentation"))}})
    legacyEnum: str = Field(description="Legacy enum with enumNames",
                            json_schema_extra={"enum": ["small", "medium", "large"],
                                               "enumNames": ["Small Size", "Medium Size",
                                                             "Large Size"]})


@app.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicitation with every enum schema variant."""
    try:
        result = await ctx.elicit(
            message="Please select values using different enum schema types", schema=Enums)
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"Elicitation completed: action={result.action}, content={content}"


@app.tool()
async def test_missing_capability(ctx: Context) -> str:
    """A JSON-RPC error (not isError) when the client did not declare sampling."""
    caps = ctx.session.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                       message="This tool requires the client 'sampling' capability",
                       data={"requiredCapabilities": {"sampling": {}}})
    return "Client declared sampling capability; proceeding."


# ---------------------------------------------------------------- 2026-07-28 input-required

def _ask(message: str, field: str = "name") -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema={
        "type": "object", "properties": {field: {"type": "string"}}, "required": [field]}))


def _sample(prompt: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(params=CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=text(prompt))], max_tokens=max_tokens))


def _confirm() -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message="Please confirm", requested_schema={
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}))


def _elicited(answer: Any, field: str) -> Any:
    if isinstance(answer, ElicitResult) and answer.content:
        return answer.content.get(field)
    return None


@app.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Needs the user's name, asked through an input request."""
    answers = ctx.input_responses or {}
    if "user_name" in answers:
        return f"Hello, {_elicited(answers['user_name'], 'name') or 'stranger'}!"
    return InputRequiredResult(input_requests={"user_name": _ask("What is your name?")})


@app.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Needs an LLM answer, asked through an input request."""
    answers = ctx.input_responses or {}
    if "capital_question" in answers:
        answer = answers["capital_question"]
        said = (answer.content.text if isinstance(answer, CreateMessageResult)
                and answer.content.type == "text" else "?")
        return f"Model said: {said}"
    return InputRequiredResult(input_requests={
        "capital_question": _sample("What is the capital of France?", 100)})


@app.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Needs the client's roots, asked through an input request."""
    answers = ctx.input_responses or {}
    if "client_roots" in answers:
        roots = answers["client_roots"]
        return f"Client exposed {len(roots.roots) if isinstance(roots, ListRootsResult) else 0} " \
               "root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


@app.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Round-trips a requestState."""
    if "confirm" in (ctx.input_responses or {}) and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    return InputRequiredResult(input_requests={"confirm": _confirm()},
                               request_state="request-state-nonce")


@app.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Needs an elicitation, a sampling and the roots at once."""
    if {"user_name", "greeting", "client_roots"} <= (ctx.input_responses or {}).keys():
        return "All inputs received."
    return InputRequiredResult(input_requests={
        "user_name": _ask("What is your name?"), "greeting": _sample("Generate a greeting", 50),
        "client_roots": ListRootsRequest()}, request_state="multiple-inputs")


@app.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: name, then colour, then the answer; the state says which round."""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    answers = ctx.input_responses or {}
    if state["round"] == 1 and "step1" in answers:
        return InputRequiredResult(
            input_requests={"step2": _ask("Step 2: What is your favorite color?", "color")},
            request_state=json.dumps({"round": 2, "name": _elicited(answers["step1"], "name")}))
    if state["round"] == 2 and "step2" in answers:
        return f"{state.get('name')} likes {_elicited(answers['step2'], 'color')}."
    return InputRequiredResult(input_requests={"step1": _ask("Step 1: What is your name?")},
                               request_state=json.dumps({"round": 1}))


@app.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """A requestState the client changed is refused (by the SDK's sealing)."""
    if ctx.request_state is None:
        return InputRequiredResult(input_requests={"confirm": _confirm()},
                                   request_state="round-1")
    return f"state-ok: {ctx.request_state}"


@app.tool()
async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Asks only for what the client declared it can answer."""
    caps = ctx.client_capabilities
    wanted: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        wanted["sample"] = _sample("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        wanted["ask"] = _ask("What is your name?")
    return InputRequiredResult(input_requests=wanted, request_state="capability-gated")


# ---------------------------------------------------------------- schemas and headers

SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
        "street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                   "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                   "phone": {"type": "string"}, "email": {"type": "string"}},
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@app.tool(name="json_schema_2020_12_tool")
def json_schema_2020_12_tool() -> str:
    """Lists an inputSchema using JSON Schema 2020-12 keywords."""
    return "json_schema_2020_12_tool"


# MCPServer derives inputSchema from the signature; this one must be listed verbatim.
app._tool_manager._tools["json_schema_2020_12_tool"].parameters = SCHEMA_2020_12


@app.tool()
def test_x_mcp_header(region: Annotated[str, Field(
        description="Mirrored into the Mcp-Param-Region header",
        json_schema_extra={"x-mcp-header": "Region"})] = "<none>") -> str:
    """A parameter mirrored into an HTTP header (x-mcp-header)."""
    return f"region={region}"


# ---------------------------------------------------------------- resources

@app.resource("test://static-text")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@app.resource("test://static-binary")
def static_binary() -> bytes:
    """A static binary resource (a PNG)."""
    return base64.b64decode(PNG)


@app.resource("test://template/{id}/data")
def template_data(id: str) -> str:
    """A templated resource: the id comes back in the content."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@app.resource("test://watched-resource")
def watched() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# ---------------------------------------------------------------- prompts

@app.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage(role="user", content=text("This is a simple prompt for testing."))]


@app.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(role="user",
                        content=text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


@app.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt embedding the resource it is given."""
    return [UserMessage(role="user", content=EmbeddedResource(
                type="resource", resource=TextResourceContents(
                    uri=resourceUri, mime_type="text/plain",
                    text="Embedded resource content for testing."))),
            UserMessage(role="user", content=text("Please process the embedded resource above."))]


@app.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt with an image."""
    return [UserMessage(role="user", content=ImageContent(type="image", data=PNG,
                                                          mime_type="image/png")),
            UserMessage(role="user", content=text("Please analyze the image above."))]


@app.prompt()
async def test_input_required_result_prompt(ctx: Context
                                            ) -> list[UserMessage] | InputRequiredResult:
    """A prompt that needs the user's input first (input request from prompts/get)."""
    answers = ctx.input_responses or {}
    if "user_context" in answers:
        given = _elicited(answers["user_context"], "context") or "?"
        return [UserMessage(role="user", content=text(f"Use the following context: {given}"))]
    return InputRequiredResult(input_requests={
        "user_context": _ask("What context should the prompt use?", "context")})


# ---------------------------------------------------------------- other requests

async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams
                      ) -> EmptyResult:
    subscriptions.discard(str(params.uri))
    return EmptyResult()


# MCPServer has no public hook for these three yet.
app._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
app._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams,
                                         subscribe)
app._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams,
                                         unsubscribe)


@app.completion()
async def complete(ref: PromptReference | ResourceTemplateReference,
                   argument: CompletionArgument, context: CompletionContext | None) -> Completion:
    return Completion(values=[], total=0, has_more=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--http"]:  # the SDK's own HTTP server, for bench/bench_http.py
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif sys.argv[1:2] == ["--pipes"]:  # stdio on the event loop's pipes, as the Luna server
        import anyio

        from luna_server.stdio import run_stdio

        anyio.run(run_stdio, app)
    else:
        app.run()

"""The MCP surface through the real `mcp` SDK client over stdio, against `luna-server`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client

from tests.server.helpers import (
    LEGACY_IDS,
    LEGACY_QUERY,
    copy_legacy,
    luna_session,
    server_params,
    text_of,
    tree_digest,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

EXPECTED_TOOLS = [
    ("phi_consciousness_calculate", {"interaction_context": ""}),
    ("fractal_memory_store", {"memory_type": "", "content": "", "metadata": "{}"}),
    ("fractal_memory_retrieve", {"query": "", "memory_type": "all", "depth": "3"}),
    ("emotional_state_analyze", {"user_input": "", "luna_context": ""}),
    ("consciousness_state_query", {"aspect": "all"}),
    ("insight_generate_emergent", {"topic": "", "context": ""}),
    ("pattern_recognize_fractal", {"data_stream": "", "pattern_type": "auto"}),
    ("semantic_validate_coherence", {"statement": "", "context": ""}),
    ("metamorphosis_check_readiness", {}),
    ("co_evolution_track", {"interaction_summary": ""}),
    ("conversation_analyze_depth", {"conversation_text": ""}),
    ("phi_golden_ratio_insights", {"domain": ""}),
]


async def test_console_script_lists_the_twelve_tools_in_order(tmp_path: Path) -> None:
    params = server_params(tmp_path / "memory", console_script=True)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "luna-consciousness"
        tools = (await session.list_tools()).tools
    assert [t.name for t in tools] == [name for name, _ in EXPECTED_TOOLS]
    for tool, (_, params_defaults) in zip(tools, EXPECTED_TOOLS, strict=True):
        schema = tool.input_schema
        assert schema["type"] == "object"
        assert "required" not in schema, tool.name
        props = schema.get("properties", {})
        assert list(props) == list(params_defaults), tool.name
        for name, default in params_defaults.items():
            assert props[name]["type"] == "string"
            assert props[name]["default"] == default
        assert tool.description


async def test_calls_share_one_luna_across_sessions(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    async with luna_session(memory) as session:
        result = await session.call_tool("phi_consciousness_calculate", {
            "interaction_context": "What is consciousness? How does phi relate to fractal "
                                   "patterns?"})
        assert not result.is_error
        assert "Phi Value: 1.063409395299459" in text_of(result)
        assert "Fractal Signature: W4-i2-c14-H3-d4" in text_of(result)
        stored = await session.call_tool("fractal_memory_store", {
            "memory_type": "seed", "content": "golden angle phyllotaxis",
            "metadata": '{"k": 1}'})
        assert not stored.is_error and "Content Length: 24 characters" in text_of(stored)
        # omitted parameters take their defaults
        emo = await session.call_tool("emotional_state_analyze", {"user_input": "I am curious"})
        assert "User Emotion: curiosity" in text_of(emo)
    async with luna_session(memory) as session:  # a new session sees the same Luna
        phi = await session.call_tool("consciousness_state_query", {"aspect": "phi"})
        assert text_of(phi) == "Phi Value: 1.063409395299459"
        found = await session.call_tool("fractal_memory_retrieve", {"query": "golden angle"})
        assert "[seed] relevance 1.00" in text_of(found)
        insight = await session.call_tool("insight_generate_emergent", {"topic": "golden"})
        assert "Memory Sources: seed_" in text_of(insight)
        for name, args, fragment in [
            ("pattern_recognize_fractal", {"data_stream": "a a a b"}, "Pattern: repetition"),
            ("semantic_validate_coherence", {"statement": "It is."}, "Coherence Score:"),
            ("metamorphosis_check_readiness", {}, "Metamorphosis Status: PREPARING"),
            ("co_evolution_track", {"interaction_summary": "why phi?"}, "Co-Learning Events: 1"),
            ("conversation_analyze_depth", {"conversation_text": "golden?"}, "Phi Resonance:"),
            ("phi_golden_ratio_insights", {"domain": "art"}, "Resonance: 0.88"),
        ]:
            result = await session.call_tool(name, args)
            assert not result.is_error, text_of(result)
            assert fragment in text_of(result), name


INPUT_ERRORS = [
    ("fractal_memory_store", {"memory_type": "twig", "content": "x"},
     "Error: parameter 'memory_type' is 'twig'; allowed values: root, branch, leaf, seed"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "x", "metadata": "{oops"},
     "Error: parameter 'metadata' is not valid JSON"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": 7},
     "Error: parameter 'content' must be a string, got int"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "y" * 100_001},
     "Error: parameter 'content' is 100001 characters long; at most 100000"),
    ("consciousness_state_query", {"aspect": "soul"},
     "Error: parameter 'aspect' is 'soul'; allowed values: all, phi, level, metamorphosis"),
    ("phi_consciousness_calculate", {},
     "Error: parameter 'interaction_context' is required"),
    ("phi_consciousness_calculate", {"interaction_context": "hi", "mood": "x"},
     "Error: unknown parameter(s) mood for phi_consciousness_calculate; "
     "allowed parameters: interaction_context"),
    ("fractal_memory_retrieve", {"query": "x", "depth": "deep"},
     "Error: parameter 'depth' is 'deep'; allowed: an integer from 0 to 10"),
    ("co_evolution_track", {"interaction_summary": {"a": 1}},
     "Error: parameter 'interaction_summary' must be a string, got dict"),
]


async def test_input_errors_are_tool_errors_and_write_nothing(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    async with luna_session(memory) as session:
        for tool, args, fragment in INPUT_ERRORS:
            result = await session.call_tool(tool, args)
            assert result.is_error, tool
            assert text_of(result).startswith(fragment), text_of(result)
        assert not memory.exists() or not any(memory.rglob("*.json"))
        # the session is still fine after errors
        ok = await session.call_tool("phi_golden_ratio_insights", {"domain": "nature"})
        assert not ok.is_error and "Resonance: 0.95" in text_of(ok)


async def test_legacy_directory_through_the_server(tmp_path: Path) -> None:
    memory = copy_legacy(tmp_path)
    before = tree_digest(memory)
    errlog_path = tmp_path / "stderr.log"
    with open(errlog_path, "w") as errlog:
        async with luna_session(memory, errlog=errlog) as session:
            found = text_of(await session.call_tool("fractal_memory_retrieve",
                                                    {"query": LEGACY_QUERY}))
            branch_only = text_of(await session.call_tool(
                "fractal_memory_retrieve", {"query": LEGACY_QUERY, "memory_type": "branch"}))
    assert found.count("ID: ") == 7 and all(mid in found for mid in LEGACY_IDS)
    assert branch_only.count("ID: branch_") == 2 and branch_only.count("ID: ") == 2
    assert "leaf_1e73e41ef76a.json" in errlog_path.read_text()
    assert tree_digest(memory) == before


async def test_state_file_is_plain_json_after_calls(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    async with luna_session(memory) as session:
        for _ in range(3):
            await session.call_tool("phi_consciousness_calculate",
                                    {"interaction_context": "why? how?"})
    state = json.loads((memory / "consciousness_state.json").read_text())
    assert len(state["history"]) == 3 and state["phi"] == state["history"][-1]["phi_value"]

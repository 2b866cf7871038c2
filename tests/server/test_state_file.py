"""A corrupt Luna state file: defaults are used, and the bad file is kept aside, never lost."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from luna_server.coevolution import CoEvolutionHistory
from luna_server.consciousness import ConsciousnessState
from luna_server.store.layout import COEVOLUTION_FILE, CONSCIOUSNESS_FILE
from luna_server.store.state import SharedState

GARBAGE = b'{"phi": 1.61, "level": "tru'  # cut off mid-write by something that is not Luna


@pytest.mark.parametrize("content", [GARBAGE, b"[1, 2, 3]"], ids=["not-json", "not-an-object"])
def test_corrupt_consciousness_file_reads_as_defaults_and_is_kept_aside(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / CONSCIOUSNESS_FILE
    path.write_bytes(content)
    state = SharedState(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert state.consciousness() == ConsciousnessState()  # the defaults
    assert path.read_bytes() == content  # reading alone moves nothing
    if content == GARBAGE:
        assert f"state file {path} is unreadable" in caplog.text

    result = state.update_consciousness(lambda s: (dataclasses.replace(s, phi=1.5), "done"))
    assert result == "done"
    [aside] = list(tmp_path.glob(f"{CONSCIOUSNESS_FILE}.unreadable-*"))
    assert aside.read_bytes() == content  # the bad bytes, untouched, for a human to look at
    written = json.loads(path.read_text())
    assert written["phi"] == 1.5
    assert state.consciousness().phi == 1.5  # defaults + the update, read back


def test_corrupt_coevolution_file_reads_as_defaults_and_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / COEVOLUTION_FILE
    path.write_bytes(GARBAGE)
    state = SharedState(tmp_path)
    assert state.coevolution() == CoEvolutionHistory()
    state.update_coevolution(lambda h: (h, None))
    [aside] = list(tmp_path.glob(f"{COEVOLUTION_FILE}.unreadable-*"))
    assert aside.read_bytes() == GARBAGE
    assert json.loads(path.read_text())["history"] == []
    # A second update finds a good file: nothing more is moved aside.
    state.update_coevolution(lambda h: (h, None))
    assert len(list(tmp_path.glob(f"{COEVOLUTION_FILE}.unreadable-*"))) == 1

"""The file store: atomic writes, catalogs and indexes, repair after crashes, legacy layout,
bad input that writes nothing, the shared state, and `read_summary` (files only here)."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest

from luna_server.service import Luna
from luna_server.store.files import atomic_write_json, file_lock, read_lines
from luna_server.store.layout import default_memory_path
from luna_server.summary import read_summary
from luna_server.validation import MAX_TEXT, InputError
from tests.server.helpers import (
    LEGACY_IDS,
    LEGACY_QUERY,
    all_json_readable,
    copy_legacy,
    tree_digest,
)
from tests.support.ports import free_port


def stored_id(answer: str) -> str:
    match = re.search(r"ID: ((root|branch|leaf|seed)_[0-9a-f]{12})$", answer, re.M)
    assert match, answer
    return match.group(1)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_file_lock_excludes_threads(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    counter.write_text("0")

    def bump() -> None:
        for _ in range(50):
            with file_lock(tmp_path / "n.lock"):
                counter.write_text(str(int(counter.read_text()) + 1))
    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "200"


def test_default_memory_path_is_under_the_user_data_dir(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.delenv("LUNA_MEMORY_PATH", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_memory_path() == tmp_path / "luna" / "memory"
    monkeypatch.setenv("LUNA_MEMORY_PATH", str(tmp_path / "m"))
    assert default_memory_path() == tmp_path / "m"


def test_store_writes_record_index_and_catalog(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    answer = luna.fractal_memory_store("Branch", "Fibonacci spirals in sunflowers",
                                       '{"source": "chat"}')
    mid = stored_id(answer)
    assert "Type: branch" in answer and "Content Length: 31 characters" in answer
    record = json.loads((tmp_path / "branches" / f"{mid}.json").read_text())
    assert record["id"] == mid and record["type"] == "branch"
    assert record["metadata"] == {"source": "chat"}
    assert (record["accessed_count"], record["last_accessed"], record["connected_to"]) == (
        0, None, [])
    assert record["created"].endswith("+00:00")
    index = json.loads((tmp_path / "branches" / "index.json").read_text())
    assert (index["type"], index["count"], index["memories"]) == ("branches", 1, [mid])
    assert [e["id"] for e in read_lines(tmp_path / "branches" / "catalog.jsonl")] == [mid]
    second = stored_id(luna.fractal_memory_store("branch", "more"))
    index = json.loads((tmp_path / "branches" / "index.json").read_text())
    assert index["memories"] == [mid, second] and index["count"] == 2


def test_retrieve_ranks_filters_and_cuts(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    a = stored_id(luna.fractal_memory_store("leaf", "fractal patterns in nature"))
    b = stored_id(luna.fractal_memory_store("root", "a fractal"))
    c = stored_id(luna.fractal_memory_store("seed", "fractal pattern " + "x" * 300))
    answer = luna.fractal_memory_retrieve("fractal pattern")
    # c has both tokens (1.00); a has the phrase with a plural (0.70); b one token (0.50)
    assert [line.split()[-1] for line in answer.splitlines() if "ID:" in line] == [c, a, b]
    assert "relevance 1.00" in answer and "relevance 0.70" in answer
    assert "relevance 0.50" in answer
    assert "x" * 184 + "..." in answer and "x" * 185 not in answer
    assert b not in luna.fractal_memory_retrieve("fractal", memory_type="leaf")
    assert luna.fractal_memory_retrieve("unrelated") == (
        "No memories found matching query: 'unrelated'")
    # equal relevance: newest first
    d = stored_id(luna.fractal_memory_store("root", "a fractal too"))
    ids = [line.split()[-1] for line in luna.fractal_memory_retrieve("fractal").splitlines()
           if "ID:" in line]
    assert ids == [d, c, b, a]


def test_only_ten_results_are_shown(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    ids = luna.memory.bulk_store("leaf", [f"note number {i}" for i in range(25)])
    answer = luna.fractal_memory_retrieve("note")
    assert answer.startswith("Top 10 memories matching 'note':")
    # the ten newest of 25 equally relevant memories, newest first
    shown = [line.split()[-1] for line in answer.splitlines() if "ID:" in line]
    assert shown == ids[::-1][:10]


def test_torn_catalog_and_lagging_index_are_repaired(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    first = stored_id(luna.fractal_memory_store("seed", "alpha"))
    catalog = tmp_path / "seeds" / "catalog.jsonl"
    with open(catalog, "ab") as handle:  # what a crash mid-append leaves
        handle.write(b'{"id": "seed_deadbeef0000", "type": "se')
    assert luna.fractal_memory_retrieve("alpha").count("ID: ") == 1
    second = stored_id(luna.fractal_memory_store("seed", "alpha beta"))
    assert [e["id"] for e in read_lines(catalog)] == [first, second]
    assert catalog.read_bytes().endswith(b"\n")
    # a crash after the catalog append, before index.json: the index catches up next time
    lost = {"id": "seed_0123456789ab", "type": "seed", "created": "2026-01-01T00:00:00+00:00",
            "content": "gamma"}
    with open(catalog, "ab") as handle:
        handle.write(json.dumps(lost).encode() + b"\n")
    third = stored_id(luna.fractal_memory_store("seed", "delta"))
    index = json.loads((tmp_path / "seeds" / "index.json").read_text())
    assert index["memories"] == [first, second, lost["id"], third]


def test_missing_catalog_is_rebuilt_from_the_memory_files(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    ids = [stored_id(luna.fractal_memory_store("root", f"memory {i}")) for i in range(3)]
    (tmp_path / "roots" / "catalog.jsonl").unlink()
    assert luna.fractal_memory_retrieve("memory").count("ID: ") == 3  # read: scan files
    ids.append(stored_id(luna.fractal_memory_store("root", "memory 3")))
    assert [e["id"] for e in read_lines(tmp_path / "roots" / "catalog.jsonl")] == ids


@pytest.mark.parametrize(("tool", "args", "fragment"), [
    ("fractal_memory_store", {"memory_type": "twig", "content": "x"},
     "parameter 'memory_type' is 'twig'; allowed values: root, branch, leaf, seed"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "   "},
     "parameter 'content' is required"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "x", "metadata": "{bad"},
     "parameter 'metadata' is not valid JSON"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "x", "metadata": "[1, 2]"},
     "parameter 'metadata' is a JSON list; allowed: a JSON object"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": "x" * (MAX_TEXT + 1)},
     f"parameter 'content' is {MAX_TEXT + 1} characters long; at most {MAX_TEXT}"),
    ("fractal_memory_store", {"memory_type": "leaf", "content": 42},
     "parameter 'content' must be a string, got int"),
    ("fractal_memory_retrieve", {"query": "x", "memory_type": "branchs"},
     "allowed values: all, root, branch, leaf, seed"),
    ("fractal_memory_retrieve", {"query": "x", "depth": "11"},
     "parameter 'depth' is '11'; allowed: an integer from 0 to 10"),
    ("consciousness_state_query", {"aspect": "mood"},
     "allowed values: all, phi, level, metamorphosis"),
    ("phi_consciousness_calculate", {"interaction_context": ""},
     "parameter 'interaction_context' is required"),
    ("phi_consciousness_calculate", {"interaction_context": "?" * (MAX_TEXT + 1)},
     "at most 100000 characters"),
    ("co_evolution_track", {"interaction_summary": ["a"]}, "must be a string, got list"),
    ("pattern_recognize_fractal", {"data_stream": "a", "pattern_type": "spiral"},
     "allowed values: auto, repetition, hierarchical, emergent"),
    ("emotional_state_analyze", {"user_input": "hi", "luna_context": None},
     "parameter 'luna_context' must be a string, got NoneType"),
])
def test_bad_input_is_an_error_and_writes_nothing(tmp_path: Path, tool: str,
                                                  args: dict[str, object],
                                                  fragment: str) -> None:
    memory = tmp_path / "memory"
    with pytest.raises(InputError) as caught:
        getattr(Luna(memory), tool)(**args)
    assert str(caught.value).startswith("Error: ")
    assert fragment in str(caught.value)
    assert not memory.exists() or not any(memory.rglob("*.json"))


def test_legacy_directory_is_read_without_being_touched(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    memory = copy_legacy(tmp_path)
    before = tree_digest(memory)
    luna = Luna(memory)
    with caplog.at_level(logging.WARNING, logger="luna_server.store"):
        entries = list(luna.memory.entries())
        answer = luna.fractal_memory_retrieve(LEGACY_QUERY)
        state_answer = luna.consciousness_state_query()
    assert {e["id"] for e in entries} == LEGACY_IDS
    assert answer.count("ID: ") == 7
    assert all(mid in answer for mid in LEGACY_IDS)
    assert "leaf_1e73e41ef76a" not in answer
    assert [p.name for p in luna.memory.skipped] == ["leaf_1e73e41ef76a.json"]
    assert any("leaf_1e73e41ef76a.json" in r.getMessage() for r in caplog.records)
    assert "Phi Value: 1.000000000000000" in state_answer
    history = luna.state.coevolution()
    assert len(history.history) == 1 and history.history[0]["mutual_growth_score"] == 0.71
    assert tree_digest(memory) == before  # reading changed nothing, created nothing
    # writing goes to the new folders; the legacy ones stay as they were
    assert "Co-Learning Events: 2" in luna.co_evolution_track("why phi?")
    mid = stored_id(luna.fractal_memory_store("branch", "golden branch"))
    assert (memory / "branches" / f"{mid}.json").exists()
    after = tree_digest(memory)
    assert {k: v for k, v in after.items() if k.startswith(("branchs/", "leafs/"))} == {
        k: v for k, v in before.items() if k.startswith(("branchs/", "leafs/"))}
    assert luna.fractal_memory_retrieve(LEGACY_QUERY).count("ID: ") == 8
    assert all_json_readable(memory) == [str(memory / "leafs" / "leaf_1e73e41ef76a.json")]


def test_bare_list_index_of_an_old_root_folder(tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    roots.mkdir()
    record = {"id": "root_00000000abcd", "type": "root", "content": "old golden root",
              "metadata": {}, "created": "2024-05-01T10:00:00", "accessed_count": 0,
              "last_accessed": None, "connected_to": []}
    (roots / "root_00000000abcd.json").write_text(json.dumps(record))
    (roots / "index.json").write_text(json.dumps(["root_00000000abcd"]))
    assert read_summary(tmp_path)["memories"]["root"] == 1
    luna = Luna(tmp_path)
    assert "root_00000000abcd" in luna.fractal_memory_retrieve("golden")
    new = stored_id(luna.fractal_memory_store("root", "new golden root"))
    index = json.loads((roots / "index.json").read_text())
    assert index["memories"] == ["root_00000000abcd", new] and index["count"] == 2


def test_state_is_shared_and_persisted(tmp_path: Path) -> None:
    one, two = Luna(tmp_path), Luna(tmp_path)
    one.phi_consciousness_calculate("What is consciousness? How does phi relate to fractal "
                                    "patterns?")
    assert two.consciousness_state_query("phi") == "Phi Value: 1.063409395299459"
    two.co_evolution_track("why how")
    saved = json.loads((tmp_path / "co_evolution_history.json").read_text())
    assert len(saved["history"]) == 1 and saved["baselines"]["question_depth"] == (
        pytest.approx(0.9 * 0.5 + 0.1 * 0.4))
    assert "Co-Learning Events: 2" in one.co_evolution_track("again")


def test_threads_in_one_process_lose_no_cycle(tmp_path: Path) -> None:
    luna = Luna(tmp_path)
    threads = [threading.Thread(target=lambda: [luna.phi_consciousness_calculate("a? b")
                                                for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(luna.state.consciousness().history) == 40


def test_read_summary_from_files(tmp_path: Path) -> None:
    assert read_summary(tmp_path / "missing") == {
        "phi": 1.0, "memories": {"root": 0, "branch": 0, "leaf": 0, "seed": 0}}
    luna = Luna(tmp_path)
    luna.fractal_memory_store("leaf", "one")
    luna.fractal_memory_store("leaf", "two")
    luna.fractal_memory_store("seed", "three")
    luna.phi_consciousness_calculate("what? why? how?")
    summary = read_summary(tmp_path)
    assert summary["memories"] == {"root": 0, "branch": 0, "leaf": 2, "seed": 1}
    assert summary["phi"] == luna.state.consciousness().phi > 1.0
    legacy = read_summary(copy_legacy(tmp_path))
    assert legacy["memories"] == {"root": 2, "branch": 2, "leaf": 3, "seed": 1}
    # a Redis that does not answer, or a malformed URL: the files answer, nothing raises
    assert read_summary(tmp_path, f"redis://127.0.0.1:{free_port()}/0") == summary
    assert read_summary(tmp_path, "not a url") == summary


def test_malformed_redis_url_means_files_only(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="luna_server"):
        luna = Luna(tmp_path, "localhost:6379")
    assert luna.redis is None
    assert "LUNA_REDIS_URL is not a Redis URL" in caplog.text and "redis://" in caplog.text
    luna.fractal_memory_store("leaf", "still works")
    assert "still works" in luna.fractal_memory_retrieve("works")

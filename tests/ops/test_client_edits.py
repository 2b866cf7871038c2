"""The pure parts of `luna config CLIENT`: in-place JSON(C) and TOML edits, paths, policy.

No processes: every case is a text in and a text out, checked by parsing the result and, where
the edit is undone, by comparing bytes with the original.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from daemon.commands.clients import jsonedit, tomledit
from daemon.commands.clients.apply import ClientConfigError, plan_install, plan_remove
from daemon.commands.clients.registry import CLIENTS, entry_socket, is_luna_entry

ENTRY = {"command": "/v/bin/luna-shim", "args": ["luna", "--socket", "/r/luna.sock"]}


def set_then_remove(text: str, jsonc: bool, container: str = "servers") -> str:
    root = jsonedit.parse(text, jsonc=jsonc)
    added = jsonedit.set_member(text, root, container, "luna", ENTRY, jsonc=jsonc)
    value = jsonedit.parse(added, jsonc=jsonc).value
    assert value[container]["luna"] == ENTRY
    removed = jsonedit.remove_member(added, jsonedit.parse(added, jsonc=jsonc), container,
                                     "luna", jsonc=jsonc)
    return removed


@pytest.mark.parametrize("text", [
    '{"servers": {"a": {"command": "x"}}}',
    '{"servers": {"a": 1, "b": [1, 2]}, "other": true}\n',
    '{\n    "servers": {\n        "a": {\n            "command": "x"\n        }\n    }\n}\n',
    '{\n\t"servers": {\n\t\t"a": 1\n\t},\n\t"x": null\n}\n',
    '{\n  "servers": {}\n}\n',
])
def test_json_add_then_remove_gives_back_the_same_bytes(text: str) -> None:
    assert set_then_remove(text, jsonc=False) == text


@pytest.mark.parametrize("text", [
    # comments everywhere, trailing commas, as VS Code and Zed write them
    '{\n  // servers\n  "servers": {\n    "a": {"type": "http", "url": "u"}, // a\n'
    '    /* more */\n  },\n  "inputs": [],\n}\n',
    '// Zed settings\n{\n  "theme": "One Dark", /* inline */\n  "servers": {\n'
    '    "a": {\n      "command": "x", // why\n    },\n  }\n}\n',
    '{"servers": {"a": 1,},}',
])
def test_jsonc_comments_and_trailing_commas_survive(text: str) -> None:
    assert set_then_remove(text, jsonc=True) == text
    root = jsonedit.parse(text, jsonc=True)
    added = jsonedit.set_member(text, root, "servers", "luna", ENTRY, jsonc=True)
    for piece in ("// ", "/* "):
        assert added.count(piece) == text.count(piece)


def test_container_created_when_missing_and_entry_replaced_in_place() -> None:
    text = '{\n  "theme": "dark"\n}\n'
    root = jsonedit.parse(text, jsonc=False)
    added = jsonedit.set_member(text, root, "mcpServers", "luna", ENTRY, jsonc=False)
    assert json.loads(added) == {"theme": "dark", "mcpServers": {"luna": ENTRY}}
    assert added.startswith('{\n  "theme": "dark",\n  "mcpServers": {\n    "luna": {')
    other = {"command": "/other/luna-shim", "args": []}
    replaced = jsonedit.set_member(added, jsonedit.parse(added, jsonc=False), "mcpServers",
                                   "luna", other, jsonc=False)
    assert json.loads(replaced)["mcpServers"]["luna"] == other
    assert replaced.startswith('{\n  "theme": "dark",\n  "mcpServers": {\n    "luna": {')


@pytest.mark.parametrize("text, jsonc, message, line, column", [
    ('{"a": 1,}', False, "Illegal trailing comma", 1, 8),
    ('{\n  // c\n  "a": 1\n}', False, "Expecting property name", 2, 3),
    ('{\n  "a": 1\n  "b": 2\n}', True, "Expecting ',' delimiter", 3, 3),
    ('{\n  "a": /* open\n}', True, "Unterminated comment", 2, 8),
    ('{"a": tru}', True, "Expecting value", 1, 7),
    ('{"a": 1} x', True, "Extra data", 1, 10),
])
def test_syntax_errors_name_line_and_column(text: str, jsonc: bool, message: str, line: int,
                                            column: int) -> None:
    with pytest.raises(jsonedit.JsonSyntaxError) as err:
        jsonedit.parse(text, jsonc=jsonc)
    assert err.value.msg.startswith(message)
    assert (err.value.lineno, err.value.colno) == (line, column)


def test_parse_agrees_with_the_json_module() -> None:
    text = json.dumps({"a": [1, -2.5e3, "é\\\"\n", None, True, {"b": {}}], "c": "x"}, indent=1)
    assert jsonedit.parse(text, jsonc=False).value == json.loads(text)
    assert jsonedit.parse("\ufeff" + text, jsonc=False).value == json.loads(text)


# ---------------------------------------------------------------- TOML


@pytest.mark.parametrize("value", ["plain", 'q"uote', "back\\slash", "tab\tnew\nline",
                                   "\x00\x01\x1f\x7f", "é ✓ 🚀", "", "'single'"])
def test_toml_strings_round_trip_through_tomllib(value: str) -> None:
    assert tomllib.loads(f"k = {tomledit.toml_value(value)}")["k"] == value
    table = {"s": value, "l": [value, "x"], "t": {value or "k": value}, "b": True, "n": 3}
    doc = tomledit.render_table("mcp_servers", value or "empty", table)
    assert tomllib.loads(doc) == {"mcp_servers": {value or "empty": table}}


CODEX = """\
# my codex config
model = "o4-mini"

[mcp_servers.github]
command = "gh-mcp"
env = { TOKEN = "t" }

# the docs server
[mcp_servers.docs]
url = "https://example.com/mcp"

[profiles.fast]
model = "small"
"""


def test_toml_add_replace_remove_keep_every_other_line() -> None:
    data = tomllib.loads(CODEX)
    added = tomledit.set_table(CODEX, data, "mcp_servers", "luna", ENTRY)
    assert added.startswith(CODEX)
    assert tomllib.loads(added)["mcp_servers"]["luna"] == ENTRY
    assert tomledit.remove_table(added, tomllib.loads(added), "mcp_servers", "luna") == CODEX
    # Replacing a table in the middle keeps the comment that belongs to the next table.
    new = {"command": "/x/luna-shim", "args": ["docs"]}
    replaced = tomledit.set_table(CODEX, data, "mcp_servers", "github", new)
    assert "# the docs server\n[mcp_servers.docs]" in replaced
    expected = tomllib.loads(CODEX)
    expected["mcp_servers"]["github"] = new
    assert tomllib.loads(replaced) == expected
    removed = tomledit.remove_table(CODEX, data, "mcp_servers", "github")
    assert "# the docs server" in removed and "gh-mcp" not in removed


def test_toml_subtables_go_with_their_table() -> None:
    text = ('[mcp_servers.luna]\ncommand = "old"\n\n[mcp_servers.luna.env]\nA = "1"\n\n'
            '[mcp_servers.other]\ncommand = "o"\n')
    data = tomllib.loads(text)
    replaced = tomledit.set_table(text, data, "mcp_servers", "luna", ENTRY)
    assert tomllib.loads(replaced)["mcp_servers"] == {"luna": ENTRY, "other": {"command": "o"}}
    removed = tomledit.remove_table(text, data, "mcp_servers", "luna")
    assert tomllib.loads(removed) == {"mcp_servers": {"other": {"command": "o"}}}


@pytest.mark.parametrize("text", [
    'mcp_servers.luna.command = "x"\n',
    'mcp_servers = { luna = { command = "x" } }\n',
])
def test_toml_other_forms_of_the_entry_are_refused(text: str) -> None:
    with pytest.raises(tomledit.TomlEditError, match="dotted keys or an inline table"):
        tomledit.set_table(text, tomllib.loads(text), "mcp_servers", "luna", ENTRY)
    with pytest.raises(tomledit.TomlEditError, match="dotted keys or an inline table"):
        tomledit.remove_table(text, tomllib.loads(text), "mcp_servers", "luna")


def test_toml_edit_that_would_change_something_else_is_not_written() -> None:
    # A "[" line inside a multi-line string looks like a header to a line editor; the check
    # against tomllib catches it.
    text = ('[mcp_servers.luna]\ncommand = "x"\nnote = """\n[not a header]\n"""\n')
    codex = CLIENTS["codex"]
    with pytest.raises(ClientConfigError, match="did not give the intended document"):
        plan_install(text, codex, {"luna": ENTRY}, "config.toml")


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_plan_install_and_remove_per_client(client: str) -> None:
    c = CLIENTS[client]
    entry = c.entry("/v/bin/luna-shim", ["luna", "--socket", "/r/luna.sock"])
    text, outcomes = plan_install(None, c, {"luna": entry}, "f")
    assert outcomes == {"luna": "added"}
    data = tomllib.loads(text) if c.fmt == "toml" else json.loads(text)
    assert data == {c.container: {"luna": entry}}
    assert plan_install(text, c, {"luna": entry}, "f") == (text, {"luna": "unchanged"})
    removed, outcomes = plan_remove(text, c, None, "f")
    assert outcomes == {"luna": "removed"}
    data = tomllib.loads(removed) if c.fmt == "toml" else json.loads(removed)
    assert data.get(c.container, {}) == {}


def test_remove_takes_only_luna_entries() -> None:
    c = CLIENTS["cursor"]
    text = json.dumps({"mcpServers": {"luna": {"command": "/srv/my-own-luna"},
                                      "echo": {"command": "/a/luna-shim", "args": ["echo"]},
                                      "web": {"url": "http://x/mcp"}}})
    new, outcomes = plan_remove(text, c, None, "f")
    assert outcomes == {"echo": "removed"}
    assert set(json.loads(new)["mcpServers"]) == {"luna", "web"}
    new, outcomes = plan_remove(text, c, ["luna", "nope"], "f")
    assert outcomes == {"luna": "kept", "nope": "absent"} and new == text


def test_entry_recognition() -> None:
    assert is_luna_entry({"command": "/x/bin/luna-shim"})
    assert is_luna_entry({"command": {"path": "/x/bin/luna-shim"}})  # Zed's older form
    assert not is_luna_entry({"command": "npx"}) and not is_luna_entry("luna-shim")
    assert entry_socket({"args": ["luna", "--socket", "/r/l.sock"]}).as_posix() == "/r/l.sock"
    assert entry_socket({"args": ["luna"]}) is None


def test_user_files_per_platform() -> None:
    linux = {"HOME": "/home/u"}
    mac = {"HOME": "/Users/u"}
    want = {
        "claude-desktop": ("/home/u/.config/Claude/claude_desktop_config.json",
                           "/Users/u/Library/Application Support/Claude/"
                           "claude_desktop_config.json"),
        "claude-code": ("/home/u/.claude.json", "/Users/u/.claude.json"),
        "cursor": ("/home/u/.cursor/mcp.json", "/Users/u/.cursor/mcp.json"),
        "vscode": ("/home/u/.config/Code/User/mcp.json",
                   "/Users/u/Library/Application Support/Code/User/mcp.json"),
        "codex": ("/home/u/.codex/config.toml", "/Users/u/.codex/config.toml"),
        "gemini": ("/home/u/.gemini/settings.json", "/Users/u/.gemini/settings.json"),
        "windsurf": ("/home/u/.codeium/windsurf/mcp_config.json",
                     "/Users/u/.codeium/windsurf/mcp_config.json"),
        "zed": ("/home/u/.config/zed/settings.json", "/Users/u/.config/zed/settings.json"),
    }
    assert set(want) == set(CLIENTS)
    for name, (on_linux, on_mac) in want.items():
        assert str(CLIENTS[name].user_file("linux", linux)) == on_linux
        assert str(CLIENTS[name].user_file("darwin", mac)) == on_mac
    xdg = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}
    assert str(CLIENTS["vscode"].user_file("linux", xdg)) == "/x/Code/User/mcp.json"
    assert str(CLIENTS["zed"].user_file("linux", xdg)) == "/x/zed/settings.json"
    assert str(CLIENTS["codex"].user_file("linux", {"CODEX_HOME": "/c"})) == "/c/config.toml"
    assert str(CLIENTS["claude-code"].user_file(
        "linux", {"HOME": "/h", "CLAUDE_CONFIG_DIR": "/cc"})) == "/cc/.claude.json"


def test_base_url_of_a_listen_address() -> None:
    from daemon.commands.clients.command import base_url

    assert base_url("127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert base_url("0.0.0.0:80") == "http://127.0.0.1:80"
    assert base_url("[::]:9000") == "http://[::1]:9000"
    assert base_url("[::1]:9000") == "http://[::1]:9000"
    assert base_url("localhost:1") == "http://localhost:1"

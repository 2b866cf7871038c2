"""Every end-to-end test module runs its lunad also as an unprivileged user, or says why not.

A module is end to end when it starts lunad (`Lunad(...)` or a subclass, `Supervised(...)`,
`PrivateDefaults(...)`) or its tests take a `lunad` fixture. It passes when it uses the
`unprivileged_user` fixture itself, or is marked `pytest.mark.root_only("why")`: where its
paths run as a user, or why they do not need to (the same code whatever the uid) or cannot
yet. Every test file the reason names must exist, so a reason cannot point at nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
STARTERS = ("Supervised", "PrivateDefaults")


def starts_lunad(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", "")
            if name.endswith("Lunad") or name in STARTERS:
                return True
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test_")
                and any(a.arg == "lunad" for a in node.args.args)):
            return True
    return False


def root_only_reason(tree: ast.Module) -> str | None:
    """The string given to `pytest.mark.root_only(...)` in the module's `pytestmark`."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "pytestmark" for t in node.targets):
            for call in ast.walk(node.value):
                if (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "root_only"
                        and call.args and isinstance(call.args[0], ast.Constant)):
                    return str(call.args[0].value)
    return None


def audit(path: Path) -> str | None:
    """None when `path` is fine, else what is wrong with it."""
    source = path.read_text()
    tree = ast.parse(source)
    if not starts_lunad(tree) or "unprivileged_user" in source:
        return None
    reason = root_only_reason(tree)
    if reason is None:
        return "starts lunad as the runner's uid only and has no root_only mark saying why"
    missing = [name for name in re.findall(r"tests/[\w/]+\.py", reason)
               if not (ROOT / name).is_file()]
    if missing:
        return f"its root_only reason names files that do not exist: {missing}"
    return None


def test_every_end_to_end_module_runs_as_a_user_or_says_why_not() -> None:
    problems = {str(p.relative_to(ROOT)): why for p in sorted(TESTS.rglob("test_*.py"))
                if (why := audit(p))}
    assert not problems, problems


def test_the_audit_catches_an_unmarked_module_and_a_dangling_reason(tmp_path: Path) -> None:
    unmarked = tmp_path / "test_a.py"
    unmarked.write_text("def test_x(lunad):\n    pass\n")
    assert "no root_only mark" in (audit(unmarked) or "")
    dangling = tmp_path / "test_b.py"
    dangling.write_text('import pytest\npytestmark = pytest.mark.root_only("see '
                        'tests/users/test_nothing_here.py")\nLunad({})\n')
    assert "do not exist" in (audit(dangling) or "")
    covered = tmp_path / "test_c.py"
    covered.write_text("def test_x(lunad, unprivileged_user):\n    pass\n")
    assert audit(covered) is None

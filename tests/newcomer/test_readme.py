"""The newcomer's path, followed literally: the README's set-up, then every runnable doc command.

A copy of the repository gets a fresh venv by running the README's first command exactly as
written (`python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/lunad`), which leaves
lunad running on its embedded defaults. Those defaults (/run/luna, /var/lib/luna, ports 9464,
6379, 9090) are the machine's, so the command runs in private mount and network namespaces
(tests/support/namespaces.py): two runs on one machine, or a run after a killed one left its
lunad, cannot collide, and a test below starts a second lunad beside the first to prove it. The
namespace has only loopback, so pip installs from a wheelhouse that pip downloaded from the
registries just before (PIP_NO_INDEX, PIP_FIND_LINKS; the command itself is unchanged). Then
an outside MCP client (the MCP Inspector CLI, not our SDK) calls a Luna tool through that
install's `luna-shim`, the call shows up in `/metrics`, every ```sh block of the README and
docs/ runs against it and must succeed, and finally lunad gets SIGTERM and must leave no
process behind (its workers, Redis and Prometheus included). The same first command also runs
as an unprivileged user, a desktop user's lunad on that uid's defaults.

Blocks fenced as ```sh are runnable; ```text blocks are illustrative (e.g. `systemctl start
luna`, which needs a real systemd). The README's two set-up commands are not run again by the
docs loop: the first is this module's fixture, the second is the command running this test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon import paths
from daemon.control_client import ControlUnavailable, request
from tests.support.namespaces import PrivateDefaults
from tests.support.processes import assert_no_new_children, live_children, subreaper
from tests.support.repository import copy_repository
from tests.support.users import User

ROOT = Path(__file__).resolve().parents[2]
INSPECTOR = ROOT / "tests" / "outside-client" / "node_modules" / ".bin" / "mcp-inspector"
DEFAULT_METRICS = "http://127.0.0.1:9464/metrics"
INSTALL_TIMEOUT = 600.0

pytestmark = pytest.mark.timeout(900)


def sh_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.M | re.S)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


NETWORK_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE",
                "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
"""How this machine reaches the package registries: a newcomer's shell has them too."""


def newcomer_env(home: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A login-like environment: no LUNA_* overrides, no venv of ours on PATH; the proxy,
    certificate and PIP_* settings kept (without them pip fails behind a proxy)."""
    source = dict(os.environ if environ is None else environ)
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR")
    env = {k: v for k, v in source.items()
           if k in keep or k.upper() in NETWORK_VARS or k.startswith("PIP_")}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if p != venv_bin)
    env["HOME"] = str(home)
    return env


@dataclass
class Installation:
    work: Path
    env: dict[str, str]
    namespaces: PrivateDefaults
    shell: subprocess.Popen[bytes]
    log: Path
    status: dict

    @property
    def bin(self) -> Path:
        return self.work / ".venv" / "bin"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """`argv` in lunad's namespaces, in the work dir, with the newcomer's environment."""
        return subprocess.run(self.namespaces.command(argv, self.work), env=self.env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              **kwargs)


def default_runtime(namespaces: PrivateDefaults, env: dict[str, str]) -> Path:
    """lunad's default runtime dir inside `namespaces`, as reached from outside them."""
    return namespaces.path(paths.runtime_dir(environ=env))


def wait_for_lunad(shell: subprocess.Popen[bytes], runtime: Path, log: Path) -> dict:
    deadline = time.monotonic() + INSTALL_TIMEOUT
    while time.monotonic() < deadline:
        if shell.poll() is not None:
            pytest.fail(f"the README's install command exited {shell.returncode}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        try:
            response = request({"cmd": "status"}, runtime_dir=str(runtime), timeout=2.0)
        except ControlUnavailable:
            time.sleep(0.5)
            continue
        status = response["result"]
        pool = status["servers"]["luna"]["pool"]
        if pool["idle"] >= 1:
            return status
        time.sleep(0.2)
    pytest.fail(f"lunad did not answer on {runtime} within {INSTALL_TIMEOUT:g} s:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


def wheelhouse(work: Path, env: dict[str, str], dest: Path) -> dict[str, str]:
    """Download what `pip install -e .` of `work` needs (its build requirements too) into
    `dest`, from the registries this machine uses; the environment that installs from it.
    The download runs in a throwaway venv of `python3` on env's PATH: the interpreter and
    pip the README's command gets (a system python3 may have no pip of its own)."""
    build = tomllib.loads((work / "pyproject.toml").read_text())["build-system"]["requires"]
    with tempfile.TemporaryDirectory(prefix="luna-download-") as venv:
        script = ('python3 -m venv "$1" && "$1/bin/pip" download --quiet --dest "$2" "$3" '
                  '"${@:4}"')
        done = subprocess.run(["bash", "-c", script, "download", venv, str(dest), str(work),
                               *build], env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"pip download failed:\n{done.stdout}{done.stderr}"
    return {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(dest)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    if os.geteuid() != 0:
        pytest.skip("runs lunad on a root's defaults in private namespaces: needs root")
    base = tmp_path_factory.mktemp("newcomer")
    work, home = base / "luna", base / "home"
    work.mkdir()
    home.mkdir()
    copy_repository(work)
    # Readable by the desktop user's run below too (pytest's own temp dirs are 0700).
    wheels = Path(tempfile.mkdtemp(prefix="luna-wheels-", dir="/tmp"))
    wheels.chmod(0o755)
    env = wheelhouse(work, newcomer_env(home), wheels)
    install = sh_blocks(ROOT / "README.md")[0].strip()
    log = base / "install.log"
    # A subreaper for the whole module: orphans of doc commands become ours, so none hides.
    with subreaper(), PrivateDefaults() as namespaces:
        with open(log, "wb") as out:
            shell = subprocess.Popen(namespaces.command(["bash", "-c", install], work), env=env,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status = wait_for_lunad(shell, default_runtime(namespaces, env), log)
            yield Installation(work, env, namespaces, shell, log, status)
        finally:
            kill_tree(shell)  # when a test failed before the stop test: leave nothing
            shutil.rmtree(wheels, ignore_errors=True)


def kill_tree(shell: subprocess.Popen[bytes]) -> None:
    """SIGKILL `shell` (a session leader) and everything under it, if it still runs."""
    if shell.poll() is None:
        for proc in psutil.Process(shell.pid).children(recursive=True):
            proc.kill()
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(10)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = sh_blocks(ROOT / "README.md")[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_install_runs_lunad_from_the_fresh_venv(installed: Installation) -> None:
    lunad = psutil.Process(installed.status["daemon"]["pid"])
    assert str(installed.bin) in " ".join(lunad.cmdline()), lunad.cmdline()


def test_outside_client_calls_a_tool_through_luna_shim(installed: Installation) -> None:
    assert INSPECTOR.exists(), "the MCP Inspector CLI is missing: scripts/test.sh installs it"
    done = installed.run(
        [str(INSPECTOR), "--cli", str(installed.bin / "luna-shim"), "--method", "tools/call",
         "--tool-name", "phi_consciousness_calculate", "--tool-arg",
         "interaction_context=What is consciousness? How does phi relate to fractal patterns?"],
        timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    text = result["content"][0]["text"]
    assert not result.get("isError"), text
    assert re.search(r"1\.\d{15}", text), text  # φ with 15 decimals

    scraped = scrape(installed)
    calls = [line for line in scraped.splitlines()
             if line.startswith("luna_tool_calls_total{")
             and 'tool="phi_consciousness_calculate"' in line and 'outcome="ok"' in line]
    assert calls and float(calls[0].rsplit(" ", 1)[1]) >= 1, scraped[:2000]


def test_a_second_lunad_on_the_same_defaults_runs_beside_the_first(
        installed: Installation, tmp_path: Path) -> None:
    """What a second test run on this machine, or the lunad a killed run left, amounts to: a
    lunad on the very same defaults. On the machine's own /run/luna it would exit 1 naming the
    running pid; in namespaces of its own it starts, serves its own ports, and stops clean."""
    # The control: in the first one's namespaces the defaults are taken, as on a shared machine.
    clash = installed.run([str(installed.bin / "lunad")], timeout=60)
    first_pid = str(installed.status["daemon"]["pid"])
    assert clash.returncode == 1 and first_pid in clash.stderr, (clash.returncode, clash.stderr)
    log = tmp_path / "second.log"
    with PrivateDefaults() as other, open(log, "wb") as out:
        second = subprocess.Popen(other.command([str(installed.bin / "lunad")], installed.work),
                                  env=installed.env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            runtime = default_runtime(other, installed.env)
            status = wait_for_lunad(second, runtime, log)
            deadline = time.monotonic() + 30
            while not status["infra"]["services"]["redis"]["up"] and time.monotonic() < deadline:
                time.sleep(0.2)
                status = request({"cmd": "status"}, runtime_dir=str(runtime))["result"]
            tree = psutil.Process(second.pid).children(recursive=True)
            metrics = subprocess.run(
                other.command(["curl", "-sf", "--max-time", "10", DEFAULT_METRICS], tmp_path),
                capture_output=True, text=True, timeout=30)
        finally:
            second.send_signal(signal.SIGTERM)
            returncode = second.wait(60)
    first = request({"cmd": "status"}, runtime_dir=str(
        default_runtime(installed.namespaces, installed.env)))["result"]
    assert status["daemon"]["pid"] == second.pid != first["daemon"]["pid"]
    assert first["daemon"]["pid"] == installed.status["daemon"]["pid"]  # the first one still runs
    # Both run their own Redis on the default port (no Docker engine is in sight of either).
    for one in (first, status):
        redis = one["infra"]["services"]["redis"]
        assert one["infra"]["backend"] == "native" and redis["up"], one["infra"]
        assert redis["detail"].endswith("127.0.0.1:6379"), redis
    assert "luna_sessions_active{" in metrics.stdout, metrics.stderr
    assert returncode == 0, log.read_text(errors="replace")[-3000:]
    _gone, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def test_readme_install_as_a_desktop_user(installed: Installation, unprivileged_user: User,
                                          tmp_path: Path) -> None:
    """The same first command as an ordinary user, as a desktop user runs Luna: lunad on that
    uid's defaults (sockets in /tmp/luna-<uid> here, no /run/user/<uid>; state in ~/.local/
    state), native Redis and Prometheus as that user on the default ports (in namespaces of
    its own), a real SDK client through its luna-shim, the call in /metrics, and SIGTERM
    leaving nothing. The work copy and wheelhouse are the user's to read."""
    user = unprivileged_user
    base = Path(tempfile.mkdtemp(prefix="luna-newcomer-", dir="/tmp"))
    try:
        base.chmod(0o755)
        work = base / "luna"
        work.mkdir()
        copy_repository(work)
        login = {"PATH": "/usr/local/bin:/usr/bin:/bin", "USER": user.name,
                 "LOGNAME": user.name, "LANG": "C.UTF-8"}
        # The user's python3 may not be ours (Debian's 3.11.2 pulls async-timeout, 3.11.7
        # does not): add what it needs to the wheelhouse, downloaded by that python3.
        wheels = Path(installed.env["PIP_FIND_LINKS"])
        pip = wheelhouse(work, newcomer_env(tmp_path, {**os.environ, **login}), wheels)
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(work)], check=True)
        pip = {k: v for k, v in pip.items() if k.startswith("PIP_")}
        env = {**newcomer_env(user.home, {**login, **pip}), **pip}
        install = sh_blocks(ROOT / "README.md")[0].strip()
        log = tmp_path / "install.log"
        with PrivateDefaults() as namespaces, open(log, "wb") as out:
            shell = subprocess.Popen(namespaces.command(["bash", "-c", install], work, user.name),
                                     env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                runtime = paths.runtime_dir(environ=env, uid=user.uid,
                                            run_root=namespaces.path("/run"),
                                            tmp_root=namespaces.path("/tmp"))
                status = wait_for_lunad(shell, runtime, log)
                lunad = psutil.Process(status["daemon"]["pid"])
                assert lunad.uids().real == user.uid and str(work / ".venv") in lunad.cmdline()[0]
                assert (user.home / ".local" / "state" / "luna").is_dir()

                def inside(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
                    return subprocess.run(namespaces.command(argv, work, user.name), env=env,
                                          capture_output=True, text=True, timeout=120,
                                          **kwargs)

                spec = {"command": [str(work / ".venv" / "bin" / "luna-shim")],
                        "env": {"HOME": str(user.home), **login}, "calls": [
                            {"tool": "phi_consciousness_calculate",
                             "arguments": {"interaction_context": "a desktop user's phi"}}]}
                called = inside([str(work / ".venv" / "bin" / "python"),
                                 str(work / "tests" / "support" / "mcp_calls.py")],
                                input=json.dumps(spec))
                assert called.returncode == 0, called.stdout + called.stderr
                result = json.loads(called.stdout)[0]
                assert not result["is_error"] and re.search(r"1\.\d{15}", result["text"]), result
                scraped = inside(["curl", "-sf", "--max-time", "10", DEFAULT_METRICS])
                assert 'tool="phi_consciousness_calculate"' in scraped.stdout, scraped.stderr
                redis = request({"cmd": "status"}, runtime_dir=str(runtime))["result"]["infra"]
                assert redis["backend"] == "native", redis
                tree = lunad.children(recursive=True)
                assert {p.uids().real for p in tree} == {user.uid}, tree
                assert "redis-server" in {p.name() for p in tree}
                lunad.send_signal(signal.SIGTERM)
                assert shell.wait(60) == 0, log.read_text(errors="replace")[-3000:]
                _gone, alive = psutil.wait_procs(tree, timeout=15)
                assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
            finally:
                kill_tree(shell)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        # lunad leaves its runtime dir (a lock file) by design; on the shared /tmp it would
        # outlive the user, whose uid a later user may get.
        shutil.rmtree(f"/tmp/luna-{user.uid}", ignore_errors=True)


def scrape(installed: Installation) -> str:
    """lunad's /metrics at its default address, from inside its network namespace."""
    done = installed.run(["curl", "-sf", "--max-time", "10", DEFAULT_METRICS], timeout=30)
    assert done.returncode == 0, f"curl {DEFAULT_METRICS} exited {done.returncode}: {done.stderr}"
    return done.stdout


def runnable_doc_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for path in doc_files():
        for index, block in enumerate(sh_blocks(path)):
            if path.name == "README.md" and index < 2:
                continue  # the set-up commands: this module's fixture, and CI's own command
            blocks.append((str(path.relative_to(ROOT)), index, block))
    return blocks


def private_tmp(block: str, where: Path) -> str:
    """`block` with each /tmp/ path moved under `where` (a private directory)."""
    return re.sub(r"(?<![\w/.])/tmp/", f"{where}/", block)


def test_private_tmp_moves_only_tmp_paths(tmp_path: Path) -> None:
    block = "mkdir -p /tmp/a && cat /tmp/a/b /var/tmp/c ./tmp/d"
    assert private_tmp(block, tmp_path) == \
        f"mkdir -p {tmp_path}/a && cat {tmp_path}/a/b /var/tmp/c ./tmp/d"
    assert not any("/tmp/" in private_tmp(b, Path("/private")) for _, _, b in
                   runnable_doc_blocks())


@pytest.mark.parametrize(("doc", "index", "block"), runnable_doc_blocks(),
                         ids=[f"{d}#{i}" for d, i, _ in runnable_doc_blocks()])
def test_doc_command_runs(installed: Installation, doc: str, index: int, block: str,
                         tmp_path: Path) -> None:
    env = dict(installed.env)
    env["PATH"] = f"{installed.bin}{os.pathsep}{env['PATH']}"
    # The docs write to /tmp/<something> for readability; run them in a private directory
    # instead, so two runs on one machine (or a reader's own files) cannot collide.
    block = private_tmp(block, tmp_path)
    before = live_children()
    done = subprocess.run(installed.namespaces.command(["bash", "-euo", "pipefail", "-c", block],
                                                       installed.work),
                          env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (f"{doc} block {index} failed ({done.returncode}):\n{block}\n"
                                  f"--- stdout\n{done.stdout[-2000:]}\n--- stderr\n"
                                  f"{done.stderr[-2000:]}")
    # A doc command that starts something must also stop it: nothing new may outlive it.
    # We are a child subreaper (see the fixture), so whatever it daemonized is ours now.
    assert_no_new_children(before, timeout=15)


def test_sigterm_stops_lunad_leaving_no_process(installed: Installation) -> None:
    tree = psutil.Process(installed.shell.pid).children(recursive=True)
    names = {p.name() for p in tree}
    if installed.status["infra"]["backend"] == "native":  # the default where Docker is absent
        assert "redis-server" in names, names
    os.kill(installed.status["daemon"]["pid"], signal.SIGTERM)
    installed.shell.wait(60)
    _gone, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    assert installed.shell.returncode == 0, installed.log_tail()

"""Luna's Redis answers lunad's uid only: another local user reaches the loopback port (any
user can) but gets nothing but NOAUTH, cannot read the password file, and does not see the
password in any process's argv. `luna doctor` checks the same thing and says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psutil
import pytest

from daemon.doctor import FAIL, OK, check_redis_refuses_strangers
from tests.support.lunad import Lunad
from tests.support.ports import free_port
from tests.support.users import User

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server not installed")]


def test_another_uid_gets_no_answer_from_lunads_redis(unprivileged_user: User,
                                                      other_user: User) -> None:
    port = free_port()
    lunad = Lunad({"luna": {"min_idle": 1, "max_sessions": 2, "stop_timeout": 2}},
                  infra={"backend": "native", "redis_port": port, "prometheus": False},
                  user=unprivileged_user)
    lunad.start(timeout=90)
    try:
        lunad.wait_for(lambda: lunad.status()["infra"]["services"]["redis"]["up"], 30,
                       "redis up")
        stored = lunad.mcp("luna", [{"tool": "fractal_memory_store", "arguments": {
            "memory_type": "leaf", "content": "the launch code is hunter2"}}])
        assert stored[0]["is_error"] is False, stored
        secret = lunad.state_dir / "secrets" / "redis-password"
        password = secret.read_text().strip()

        # The other user: the port answers, Redis says nothing but NOAUTH.
        for command in (["PING"], ["KEYS", "*"], ["SET", "luna:forged", "x"]):
            done = other_user.run(["redis-cli", "-p", str(port), *command])
            assert "NOAUTH" in done.stdout + done.stderr, (command, done)
            assert "hunter2" not in done.stdout and "luna" not in done.stdout
        # ... cannot read the password ...
        denied = other_user.run(["cat", str(secret)])
        assert denied.returncode != 0 and password not in denied.stdout
        # ... and finds it in no process's argv.
        for proc in psutil.process_iter(["cmdline"]):
            assert password not in " ".join(proc.info["cmdline"] or []), proc
        # lunad's own uid, with the password (as the workers have it), does get answers.
        own = unprivileged_user.run(["redis-cli", "-p", str(port), "--no-auth-warning",
                                     "-a", password, "PING"])  # argv only in this test
        assert own.stdout.strip() == "PONG"

        doctor = unprivileged_user.luna("doctor", "--json", "--no-start", "--config",
                                        str(lunad.config_path))
        findings = {f["item"]: f for f in json.loads(doctor.stdout)}
        assert findings["redis"]["severity"] == OK, findings["redis"]
        assert findings["redis access"]["severity"] == OK, findings["redis access"]
        assert password not in doctor.stdout
    finally:
        lunad.stop()


def test_doctor_fails_a_redis_that_answers_without_a_password(redis_url: str) -> None:
    # The test session's Redis has no password: exactly what must be reported.
    finding = check_redis_refuses_strangers(redis_url)
    assert finding.severity == FAIL
    assert "every local user" in finding.detail


def test_redact_keeps_passwords_out_of_findings(tmp_path: Path) -> None:
    from daemon.doctor import check_redis, redact
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    assert redact(url) == url.replace("s3cret", "***")
    assert "s3cret" not in check_redis(url).detail

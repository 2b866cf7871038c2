"""The newcomer's environment keeps what reaches the registries (proxy, certificates, PIP_*)."""

from __future__ import annotations

from pathlib import Path

from tests.newcomer.test_readme import newcomer_env


def test_proxy_and_pip_settings_survive_and_luna_overrides_do_not(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://proxy.invalid:3128",
               "http_proxy": "http://proxy.invalid:3128", "no_proxy": "localhost",
               "PIP_INDEX_URL": "https://mirror.invalid/simple", "PIP_CERT": "/etc/ca.pem",
               "SSL_CERT_FILE": "/etc/ca.pem", "LUNA_RUNTIME_DIR": "/tmp/elsewhere",
               "LUNA_REDIS_URL": "redis://x", "VIRTUAL_ENV": "/somewhere"}
    env = newcomer_env(tmp_path, environ)
    for kept in ("HTTPS_PROXY", "http_proxy", "no_proxy", "PIP_INDEX_URL", "PIP_CERT",
                 "SSL_CERT_FILE"):
        assert env[kept] == environ[kept]
    assert not {"LUNA_RUNTIME_DIR", "LUNA_REDIS_URL", "VIRTUAL_ENV"} & set(env)
    assert env["HOME"] == str(tmp_path)

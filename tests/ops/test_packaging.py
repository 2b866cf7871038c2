"""A regular (non-editable) install carries the shipped configs, and lunad/luna find them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from daemon import shipped
from tests.support.repository import ROOT, copy_repository

# What `luna install` renders and what the infra backends read, relative to the project.
SHIPPED = ["docker-compose.infra.yml", "etc/luna.toml", "etc/supervisord.conf",
           "etc/prometheus.yml", "etc/prometheus/alerts.yml", "systemd/luna.service",
           *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "etc" / "grafana").rglob("*"))
             if p.is_file())]


@pytest.mark.timeout(300)
def test_wheel_carries_every_shipped_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    copy_repository(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, timeout=280)
    [wheel] = (tmp_path / "dist").glob("luna-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {n.split("/data/share/luna/", 1)[1] for n in names if "/data/share/luna/" in n}
    assert data == set(SHIPPED)


def test_find_prefers_the_source_tree_then_the_data_dir(tmp_path: Path) -> None:
    tree, data = tmp_path / "tree", tmp_path / "share" / "luna"
    (data / "etc").mkdir(parents=True)
    (data / "etc" / "luna.toml").write_text("# data\n")
    (data / shipped.COMPOSE_FILE).write_text("services: {}\n")
    roots = (tree, data)
    assert shipped.find("etc/luna.toml", roots) == data / "etc" / "luna.toml"
    assert shipped.project_dir(roots) == data
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "luna.toml").write_text("# tree\n")
    (tree / shipped.COMPOSE_FILE).write_text("services: {}\n")
    assert shipped.find("etc/luna.toml", roots) == tree / "etc" / "luna.toml"
    assert shipped.project_dir(roots) == tree
    assert shipped.find("etc/missing.toml", roots) is None


def test_this_checkout_is_its_own_project_dir() -> None:
    assert shipped.project_dir() == ROOT
    for relative in SHIPPED:
        assert shipped.find(relative) == ROOT / relative

"""The Grafana provisioning files and the Luna dashboard are well formed and wired together.

There is no Grafana binary in the test environment (Debian does not package it), so this
checks what Grafana would otherwise reject or silently mis-render: the datasource uid the
panels refer to, the file provider's path and type, unique panel ids, panels that do not
overlap on the 24-column grid, and a schemaVersion Grafana 10/11 loads without migration.
Which metrics the panels query is checked in test_queries_use_exported_metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from daemon.infra.config import InfraConfig

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "etc" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "luna.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "luna.yml"


def yaml_scalars(text: str) -> dict[str, str]:
    """key -> value for the `key: value` lines of a small provisioning file (first wins)."""
    found: dict[str, str] = {}
    line = re.compile(r"^[ \t]*-?[ \t]*([A-Za-z]+):[ \t]*(\S[^#\n]*?)[ \t]*$", re.MULTILINE)
    for match in line.finditer(text):
        found.setdefault(match.group(1), match.group(2).strip("'\""))
    return found


def all_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_datasource_is_prometheus_on_loopback_with_a_fixed_uid() -> None:
    values = yaml_scalars(DATASOURCE.read_text())
    assert values["apiVersion"] == "1"
    assert values["type"] == "prometheus"
    assert values["uid"] == "prometheus"
    # Where the compose Prometheus listens (host network, --web.listen-address=127.0.0.1:
    # $LUNA_PROMETHEUS_PORT, [infra] prometheus_port): Grafana expands the variable, which the
    # compose file gives its container; tests/infra/test_compose_file.py checks both sides.
    assert values["url"] == "http://127.0.0.1:${LUNA_PROMETHEUS_PORT}"
    assert InfraConfig().prometheus_port == 9090  # the compose file's default for it
    assert values["access"] == "proxy"


def test_dashboard_provider_loads_files_from_the_mounted_directory() -> None:
    values = yaml_scalars(PROVIDER.read_text())
    assert values["apiVersion"] == "1"
    assert values["type"] == "file"
    assert values["path"] == "/etc/grafana/dashboards"
    # The dashboard is code: UI edits would be lost on the next provisioning pass anyway.
    assert values["allowUiUpdates"] == "false"


def test_dashboard_identity_and_schema() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "luna"
    assert dashboard["title"] == "Luna"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns ids


def test_every_panel_queries_the_provisioned_datasource() -> None:
    datasource_uid = yaml_scalars(DATASOURCE.read_text())["uid"]
    panels = [p for p in all_panels() if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource_uid}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']}: empty expr"
            assert target.get("datasource", panel["datasource"])["uid"] == datasource_uid
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = all_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_covers_each_topic_of_the_issue() -> None:
    titles = " | ".join(p["title"].lower() for p in all_panels())
    for topic in ("sessions", "workers by state", "spawn latency", "tool calls by tool",
                  "latency by tool", "errors", "worker resident memory", "worker cpu",
                  "infra", "φ", "memories"):
        assert topic in titles, f"no panel about {topic!r}"

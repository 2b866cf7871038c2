"""Where this install keeps Luna's shipped files: etc/, systemd/, docker-compose.infra.yml.

An editable install (`pip install -e .`, the README's way) reads them from the source tree. A
regular install (`pip install .`, a wheel) has them as data files under `<prefix>/share/luna`
(setup.cfg's `[options.data_files]`). `luna install` renders its templates from here, and
lunad's infra backends find the compose file and Prometheus' alert rules here.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parent.parent
DATA_DIR = Path(sys.prefix) / "share" / "luna"
ROOTS = (SOURCE_TREE, DATA_DIR)
COMPOSE_FILE = "docker-compose.infra.yml"


def find(relative: str, roots: tuple[Path, ...] = ROOTS) -> Path | None:
    """The first shipped copy of `relative` (e.g. "etc/luna.toml"), or None."""
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def project_dir(roots: tuple[Path, ...] = ROOTS) -> Path:
    """The directory holding the compose file and etc/: the source tree or share/luna."""
    found = find(COMPOSE_FILE, roots)
    return found.parent if found else roots[0]

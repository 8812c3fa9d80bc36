"""Lay the package out as it is installed, for tools that cannot follow the package-dir mapping.

The repository keeps ``reactive_services/``, ``adapters/``, ``operators/`` and ``examples/`` as
top-level folders; installed, the last three live under ``reactive_services`` (see
``[tool.setuptools.package-dir]`` in pyproject.toml). mypy and griffe (mkdocstrings) look modules
up on the file system and do not run setuptools' editable finder, so this script builds
``build/stage/reactive_services/`` out of symbolic links to the real files and folders and prints
the path of ``build/stage``: point the tool there (``mypy -p reactive_services`` with that folder
as the working directory; mkdocstrings' ``paths``). Errors name the linked paths, e.g.
``reactive_services/adapters/kafka/_broker.py`` is ``adapters/kafka/_broker.py``.

    python3 scripts/stage.py          # prints <repo>/build/stage
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "stage"
MAPPED = {"adapters": "adapters", "operators": "operators", "examples": "examples"}


def stage() -> Path:
    """(Re)build ``build/stage/reactive_services`` and return ``build/stage``."""
    package = STAGE / "reactive_services"
    if STAGE.exists():
        shutil.rmtree(STAGE)
    package.mkdir(parents=True)
    for entry in (ROOT / "reactive_services").iterdir():
        if entry.name == "__pycache__" or entry.name in MAPPED:
            continue
        (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    return STAGE


if __name__ == "__main__":
    print(stage())
    sys.exit(0)

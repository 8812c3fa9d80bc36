"""Take the dashboard's pictures in the docs from a real run.

    python3 scripts/dashboard_screenshots.py      # docs/images/dashboard-wide.png, dashboard-narrow.png

Runs the two browser tests that take them (tests/browser/test_dashboard.py: ``serve --dev`` as a
process, orders posted through the gateway, headless Chromium at 1400 px and at 420 px) with
``RS_UPDATE_DOCS_IMAGES=1``, which makes them copy their screenshots from ``test-artifacts/``
into ``docs/images/``. Needs chromium and chromedriver (``scripts/install_browser.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["test_the_page_opens_with_the_current_state", "test_the_narrow_layout and 420"]


def main() -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "tests/browser/test_dashboard.py",
        "-k",
        " or ".join(f"({t})" for t in TESTS),
    ]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "RS_UPDATE_DOCS_IMAGES": "1"}, check=False)
    if done.returncode == 0:
        print(f"wrote {ROOT / 'docs' / 'images' / 'dashboard-wide.png'} and dashboard-narrow.png")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

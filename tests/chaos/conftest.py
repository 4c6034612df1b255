"""The chaos tool is this repository's own tooling (``chaos/`` at the top, not installed): make it
importable from the tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

"""Makes ``batch_testkit`` (in ``tests/operators``) importable from this folder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

_KIT = str(Path(__file__).resolve().parents[1] / "operators")
if _KIT not in sys.path:
    sys.path.insert(0, _KIT)

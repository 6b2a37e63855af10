"""Where pipeline state lives (step cache, Prefect home, run logs): ``./.pruneflow``, or
``$PRUNEFLOW_STATE_DIR``. Imports nothing heavy, so a run with nothing to do finds it too."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_NAME = ".pruneflow"


def state_dir() -> Path:
    """Where pipeline state (step cache, Prefect home, server record) lives: ./.pruneflow."""
    return Path(os.environ.get("PRUNEFLOW_STATE_DIR", STATE_DIR_NAME))

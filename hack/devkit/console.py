"""Progress on stderr (stdout is kept for the launchers' result lines), prefixed with the name
of the launcher that runs: `control-plane: ...`, `argocd: ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn


def log(message: str) -> None:
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    log(f"error: {message}")
    raise SystemExit(1)

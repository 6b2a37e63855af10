"""Tiny steps whose compute counts its calls in files, for cache and restart tests."""

from __future__ import annotations

from pathlib import Path

from pruneflow.config import Params
from pruneflow.io import atomic_path
from pruneflow.steps import Step

COUNTERS = Path("counters")


def bump(name: str) -> int:
    COUNTERS.mkdir(exist_ok=True)
    path = COUNTERS / name
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def count(name: str) -> int:
    path = COUNTERS / name
    return int(path.read_text()) if path.exists() else 0


def make_step(
    name: str, reads: tuple[str, ...], upstream: Path | None, fail_flag: Path | None = None
):
    out = Path("artifacts") / f"{name}.txt"

    def compute(p: Params) -> dict:
        bump(name)
        if fail_flag is not None and fail_flag.exists():
            raise RuntimeError(f"{name} crashed (flag {fail_flag})")
        text = f"{name}:{[p.get(k) for k in reads]}:" + (upstream.read_text() if upstream else "")
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        return {"chars": len(text)}

    return Step(
        name=name,
        reads=reads,
        code=("tests/toy_steps.py",),
        inputs=lambda p: [upstream] if upstream else [],
        outputs=lambda p: [out],
        compute=compute,
    ), out

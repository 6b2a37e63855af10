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
        inputs=lambda p: [upstream] if upstream else [],
        outputs=lambda p: [out],
        compute=compute,
    ), out


def make_fanout_step(name: str, fail_flag: Path | None = None):
    """A per-item step writing artifacts/<name>/<i>.txt; item i fails while the flag names it."""

    def out(p: Params, item: dict) -> Path:
        return Path("artifacts") / name / f"{item['i']}.txt"

    def compute(p: Params, item: dict) -> dict:
        bump(f"{name}-{item['i']}")
        if fail_flag is not None and fail_flag.exists() and fail_flag.read_text() == str(item["i"]):
            raise RuntimeError(f"{name} item {item['i']} crashed")
        with atomic_path(out(p, item)) as tmp:
            tmp.write_text(f"{item['i']}:{p.noise.rate}")
        return {"i": item["i"]}

    return Step(
        name=name,
        reads=("noise.rate",),
        inputs=lambda p, item: [],
        outputs=lambda p, item: [out(p, item)],
        compute=compute,
        fan_out=True,
    )

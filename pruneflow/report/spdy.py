"""The SPDY section: timing heat maps, one-shot results, search convergence and chosen
profiles, and the gradual-pruning table in the paper's Table-4 layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pruneflow import config, layout
from pruneflow.claims import Claim
from pruneflow.config import Params
from pruneflow.io import parquet_metadata
from pruneflow.report import fmt, schemas
from pruneflow.report.doc import Figure, Heading, Note, Table, Text
from pruneflow.report.section import Section
from pruneflow.report.spdy_plots import (
    PROFILE_LABELS,
    accuracy_vs_speedup,
    timing_heatmap,
)
from pruneflow.report.stats_table import COMPARISON_NOTE, comparison_rows, paired, test_size
from pruneflow.spdy.plots import plot_profiles, plot_search
from pruneflow.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, combine, verdict
from pruneflow.timing.table import read_timing_table

RUN = "uv run pruneflow run spdy"
PROFILE_CMD = "uv run pruneflow profile"


def _missing(sec: Section, paths: list[Path], command: str) -> None:
    if paths:
        listed = ", ".join(f"`{p}`" for p in paths)
        sec.blocks.append(Note(f"Not produced yet: {listed}. `{command}` makes them."))


def _timing(sec: Section, views: dict[str, Params], figures: Path) -> None:
    sec.blocks.append(Heading("Layer timing tables", 3, "spdy-timing"))
    rows, absent = [], []
    at90 = atmax = 0.0
    for model, p in views.items():
        path = layout.timing_table(p)
        if not sec.look(path):
            absent.append(path)
            continue
        meta = parquet_metadata(path)
        table, meta = read_timing_table(path, model, meta.get("layers", []))
        name = f"spdy-timing-{model}.png"
        timing_heatmap(table, meta, model, figures / name)
        sec.blocks.append(
            Figure(
                f"spdy-timing-{model}",
                name,
                f"{model}: measured time of every profiled layer at every sparsity level "
                f"(`{path}`); the fastest backend per cell.",
            )
        )
        levels = [float(s) for s in meta["levels"]]
        near90 = int(np.argmin([abs(s - 0.9) for s in levels]))
        last = len(levels) - 1
        for layer, g in table.sort_values("layer_index").groupby("layer", sort=False):
            by = g.set_index("level")
            dense, sparse = float(by.at[0, "time_ms"]), float(by.at[last, "time_ms"])
            rows.append(
                [
                    model,
                    str(layer),
                    str(by.at[0, "op"]),
                    f"{dense:.3f}",
                    f"{float(by.at[near90, 'time_ms']):.3f}",
                    f"{sparse:.3f}",
                    f"{dense / sparse:.2f}x" if sparse > 0 else fmt.DASH,
                    str(by.at[last, "backend"]),
                ]
            )
        rows.append(
            [
                model,
                "whole model (dense)",
                "",
                f"{float(meta['dense_total_ms']):.3f}",
                "",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                model,
                "not profiled (remainder)",
                "",
                f"{float(meta['remainder_ms']):.3f}",
                "",
                "",
                "",
                "",
            ]
        )
        at90, atmax = 100 * levels[near90], 100 * levels[last]
    if rows:
        sec.blocks.append(
            Table(
                "spdy-timing",
                "Layer times per batch (ms)",
                [
                    "model",
                    "layer",
                    "op",
                    "dense",
                    f"at {at90:.1f}% sparsity",
                    f"at {atmax:.1f}% sparsity",
                    "speedup at the sparsest level",
                    "backend there",
                ],
                rows,
                note="Medians of repeated runs on this host; the remainder (first/last layers "
                "and everything not prunable) is the same at every profile.",
            )
        )
    _missing(sec, absent, PROFILE_CMD)


def _oneshot(sec: Section, views: dict[str, Params], figures: Path) -> None:
    sec.blocks.append(Heading("One-shot pruning (no fine-tuning)", 3, "spdy-oneshot"))
    frames, absent = [], []
    for p in views.values():
        path = schemas.oneshot_file(p)
        if sec.look(path):
            frames.append(schemas.ONESHOT.read(path))
        else:
            absent.append(path)
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        order = {name: i for i, name in enumerate(schemas.ONESHOT_PROFILES)}
        rows = []
        for (model, target, profile), g in sorted(
            frame.groupby(["model", "target", "profile"], sort=False),
            key=lambda kv: (
                list(views).index(kv[0][0]) if kv[0][0] in views else 99,
                kv[0][1],
                order.get(kv[0][2], 99),
            ),
        ):
            rows.append(
                [
                    str(model),
                    fmt.target(target),
                    PROFILE_LABELS.get(profile, profile),
                    fmt.pct(g["test_acc"]),
                    fmt.mean_std(g["calib_loss"], digits=4),
                    fmt.speedup(g["predicted_speedup"]),
                    fmt.speedup(g["aim"]),
                    fmt.speedup(g["measured_speedup"]),  # NaN: not measured
                    f"{g['dp_calls'].mean():.0f}",
                    f"{g['profiles_scored'].mean():.0f}",
                    str(g["seed"].nunique()),
                ]
            )
        sec.blocks.append(
            Table(
                "spdy-oneshot",
                "One-shot results: each profile stitched from the reconstruction database",
                [
                    "model",
                    "target",
                    "profile",
                    "test acc (%)",
                    "calibration loss",
                    "predicted speedup",
                    "chosen for",
                    "measured speedup",
                    "DP calls",
                    "profiles scored",
                    "seeds",
                ],
                rows,
                note="Mean ± std over seeds where several ran. Predicted speedup: dense time / "
                "(remainder + the profile's layer times) from the timing table. Measured: end to "
                "end against the dense model; a profile measured off its target is chosen again "
                "by its own rule for a corrected target (`chosen for`; "
                "`spdy.verify`), '-' where not measured.",
            )
        )
        name = "spdy-oneshot.png"
        accuracy_vs_speedup(
            frame,
            "predicted_speedup",
            "test_acc",
            figures / name,
            "predicted end-to-end speedup (x, from the timing table)",
            "one-shot accuracy",
            schemas.ONESHOT_PROFILES,
        )
        sec.blocks.append(
            Figure("spdy-oneshot", name, "One-shot test accuracy against predicted speedup.")
        )
    _missing(sec, absent, RUN)


def _chosen(p: Params, targets: list[float], sec: Section) -> pd.DataFrame | None:
    """Every (target, profile) one-shot profile: ``profiles.parquet`` when the one-shot step
    ran, else SPDY's own profile of each target (``profile.parquet``)."""
    path = schemas.profiles_file(p)
    if path.is_file():
        sec.found.append(path)
        return schemas.PROFILES.read(path)
    frames = []
    for target in targets:
        path = schemas.profile_file(p, target)
        if sec.look(path):
            frame = schemas.PROFILE.read(path)
            frames.append(frame.assign(target=float(target), profile="spdy"))
    return pd.concat(frames, ignore_index=True) if frames else None


def _search(sec: Section, views: dict[str, Params], figures: Path) -> None:
    sec.blocks.append(Heading("Sensitivity search and chosen profiles", 3, "spdy-search"))
    absent: list[Path] = []
    rows, shown = [], []
    for model, p in views.items():
        histories: dict[float, pd.DataFrame] = {}
        targets = sorted(float(t) for t in p.spdy.targets)  # the model's own
        for target in targets:
            path = schemas.search_file(p, target)
            if not sec.look(path):
                absent.append(path)
                continue
            f = schemas.SEARCH.read(path)
            if f.empty:  # nothing to draw or summarize
                continue
            histories[target] = f
            best = f.loc[f["calib_loss"].idxmin()]
            rows.append(
                [
                    model,
                    fmt.target(target),
                    str(len(f)),
                    str(int((f["phase"] == "random").sum())),
                    str(int((f["phase"] == "local").sum())),
                    fmt.num(best["calib_loss"]),
                    str(int(best["eval"]) + 1),  # eval counts from 0
                    f"{float(best['pred_time_ms']):.3f}",
                ]
            )
        if histories:
            name = f"spdy-search-{model}.png"
            plot_search(histories, model, figures / name)
            shown.append(
                Figure(
                    f"spdy-search-{model}",
                    name,
                    f"{model}: the best calibration loss found so far against the candidates "
                    "evaluated, one line per target; dotted: where the local search starts.",
                )
            )
        chosen = _chosen(p, targets, sec)
        if chosen is not None and not chosen.empty:
            first = chosen[chosen["target"] == chosen["target"].iloc[0]]
            layers = list(dict.fromkeys(first["layer"]))
            name = f"spdy-profiles-{model}.png"
            plot_profiles(chosen, layers, model, figures / name)
            shown.append(
                Figure(
                    f"spdy-profiles-{model}",
                    name,
                    f"{model}: sparsity of every profiled layer in each chosen profile "
                    "(colour: target; thick: SPDY).",
                )
            )
    if rows:
        sec.blocks.append(
            Table(
                "spdy-search",
                "Search summary",
                [
                    "model",
                    "target",
                    "candidates",
                    "random",
                    "local",
                    "best calibration loss",
                    "found at candidate",
                    "its predicted time (ms)",
                ],
                rows,
                note="Predicted time: the profiled layers' time from the discretized timing "
                "table (the fixed remainder excluded).",
            )
        )
    sec.blocks += shown
    _missing(sec, absent, RUN)


def _gradual(sec: Section, views: dict[str, Params], figures: Path) -> None:
    sec.blocks.append(Heading("Gradual pruning", 3, "spdy-gradual"))
    frames, absent = [], []
    for p in views.values():
        path = schemas.results_file(p)
        if sec.look(path):
            frames.append(schemas.RESULTS.read(path))
        else:
            absent.append(path)
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        profiles = schemas.RESULTS_PROFILES
        rows = []
        dense_by_model = {}
        for model in [m for m in views if m in set(frame["model"])]:
            rows_m = frame[frame["model"] == model]
            dense = rows_m.drop_duplicates("seed")["dense_acc"]
            dense_by_model[model] = float(dense.mean())
            for i, (target, g) in enumerate(sorted(rows_m.groupby("target"), key=lambda kv: kv[0])):
                row = [
                    model if i == 0 else "",
                    fmt.pct(dense) if i == 0 else "",
                    fmt.target(target),
                ]
                for profile in profiles:
                    sub = g[g["profile"] == profile]
                    if sub.empty:
                        row += [fmt.DASH, fmt.DASH]
                        continue
                    row += [
                        fmt.pct(sub["acc"]),
                        f"{fmt.speedup(sub['measured_speedup'])} "
                        f"({fmt.speedup(sub['predicted_speedup'])})",
                    ]
                rows.append(row)
        columns = ["model", "dense acc (%)", "target speedup"]
        for profile in profiles:
            label = {"spdy": "SPDY", "uniform": "uniform", "gmp": "GMP"}[profile]
            columns += [f"{label} acc (%)", f"{label} speedup, measured (predicted)"]
        seeds = frame["seed"].nunique()
        sec.blocks.append(
            Table(
                "spdy-gradual",
                "Gradual pruning to each profile (the SPDY paper's Table 4 layout)",
                columns,
                rows,
                note=f"Test accuracy after gradual magnitude pruning with fine-tuning"
                f"{', mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else ''}; speedup: "
                "measured end-to-end on this CPU, in parentheses predicted from the timing table.",
            )
        )
        for model in dense_by_model:
            runs = frame[frame["model"] == model].copy()
            runs.attrs["test_size"] = test_size(layout.labels_table(views[model]))
            sec.blocks.append(
                Table(
                    f"spdy-gradual-stats-{model}",
                    f"{model}: each profile against uniform at every target",
                    ["target", "profile", "n", "test acc (%) [95% CI]", "minus uniform [95% CI]"],
                    comparison_rows(
                        runs,
                        group="target",
                        method="profile",
                        methods=profiles,
                        baseline="uniform",
                        labels=PROFILE_LABELS,
                    ),
                    note=COMPARISON_NOTE.format(baseline="the uniform profile"),
                )
            )
        name = "spdy-headroom.png"
        accuracy_vs_speedup(
            frame,
            "target",
            "acc",
            figures / name,
            "target end-to-end speedup (x)",
            "headroom: uniform against dense",
            ["uniform"],
            dense=dense_by_model,
        )
        sec.blocks.append(
            Figure(
                "spdy-headroom",
                name,
                "Dense and uniform-profile accuracy after gradual pruning against the target: "
                "where uniform loses nothing, no profile can do better.",
            )
        )
        name = "spdy-gradual.png"
        accuracy_vs_speedup(
            frame,
            "measured_speedup",
            "acc",
            figures / name,
            "measured end-to-end speedup on this CPU (x)",
            "accuracy after gradual pruning",
            profiles,
            dense=dense_by_model,
        )
        sec.blocks.append(
            Figure("spdy-gradual", name, "Accuracy after gradual pruning against measured speedup.")
        )
    _missing(sec, absent, RUN)


def spdy_section(params: Params, figures: Path) -> Section:
    sec = Section("SPDY", "spdy", f"{PROFILE_CMD} && {RUN}", run=RUN)
    views = {m: config.scoped(params, f"spdy:{m}") for m in params.spdy.models}
    _timing(sec, views, figures)
    _oneshot(sec, views, figures)
    _search(sec, views, figures)
    _gradual(sec, views, figures)
    intro = Text(
        f"Models {fmt.joined(views)} on `{params.spdy.dataset}`; end-to-end speedup targets "
        "over dense: "
        + "; ".join(
            f"{m} {fmt.joined(fmt.target(t) for t in sorted(v.spdy.targets))}"
            for m, v in views.items()
        )
        + "."
    )
    return sec.finish("SPDY: layer-wise sparsity for a target speedup", intro)


SPEEDUP_TOLERANCE = 0.95  # a plan "meets" its target when measured >= this x target
# two models are at equal measured speedup when their measured speedups differ by at most
# this fraction (the same 5% as SPEEDUP_TOLERANCE)
EQUAL_SPEED_TOLERANCE = 1.0 - SPEEDUP_TOLERANCE


def _at_equal_speed(result: str, speed_ratio: float) -> str:
    """An accuracy verdict made at equal measured speedup only. ``speed_ratio``: SPDY's mean
    measured speedup over the baseline's at the target. SPDY ahead while it measures slower
    than the baseline by more than the tolerance, or behind while it measures faster, may
    have traded speed for accuracy (the profiles were aimed at one target, but the pruned
    models' speeds can part: the timing table's error, which the search's DP selects for, and
    the masks' structure, which a table timed on random masks does not see): inconclusive."""
    if result == REPRODUCED and speed_ratio < 1.0 - EQUAL_SPEED_TOLERANCE:
        return INCONCLUSIVE
    if result == NOT_REPRODUCED and speed_ratio > 1.0 / (1.0 - EQUAL_SPEED_TOLERANCE):
        return INCONCLUSIVE
    return result


def _baseline_at_spdy_speed(
    runs: pd.DataFrame, baseline: str, target: float
) -> tuple[pd.DataFrame, int]:
    """The baseline's runs at ``target``, each seed's accuracy read at the speed SPDY's model
    of that seed measured, where the two measured more than :data:`EQUAL_SPEED_TOLERANCE`
    apart: interpolated linearly in log measured speedup along that seed's baseline runs at
    every target (the baseline's own accuracy against speed curve), with SPDY's speed
    recorded. Where SPDY's speed lies outside those runs' range, the seed's own run is kept
    and the equal-speed rule (:func:`_at_equal_speed`) reads the difference. Also returns on
    how many seeds the accuracy was read so."""
    spdy = runs[(runs["profile"] == "spdy") & (runs["target"] == target)].set_index("seed")
    mine = runs[runs["profile"] == baseline]
    rows, moved = [], 0
    for seed, row in mine[mine["target"] == target].set_index("seed").iterrows():
        out = {**row.to_dict(), "seed": seed}
        if seed in spdy.index:
            speed = np.log(float(spdy.loc[seed, "measured_speedup"]))
            if abs(np.exp(speed) / float(row["measured_speedup"]) - 1.0) > EQUAL_SPEED_TOLERANCE:
                curve = mine[mine["seed"] == seed].sort_values("measured_speedup")
                s = np.log(curve["measured_speedup"].to_numpy(dtype=float))
                if s[0] < speed <= s[-1]:
                    out["acc"] = float(np.interp(speed, s, curve["acc"].to_numpy(dtype=float)))
                    out["measured_speedup"] = float(np.exp(speed))
                    moved += 1
        rows.append(out)
    return pd.DataFrame(rows, columns=runs.columns), moved


def _model_claims(model: str, runs: pd.DataFrame) -> list[Claim]:
    targets = sorted(runs["target"].unique())
    top = targets[-2:]
    dense = float(runs.drop_duplicates("seed")["dense_acc"].mean())
    claims = []
    for baseline, label in (("uniform", "uniform"), ("gmp", "global magnitude (GMP)")):
        parts, texts, order_ok = [], [], True
        for t in targets:
            at = runs[runs["target"] == t]
            base, moved = _baseline_at_spdy_speed(runs, baseline, t)
            read = pd.concat([at[at["profile"] == "spdy"], base])
            read.attrs = runs.attrs
            diff = paired(read, "spdy", baseline, by="profile", value="acc")
            if diff is None:
                continue
            means = read.groupby("profile")["acc"].mean()
            order_ok &= bool(means.get("spdy", 0.0) >= means.get(baseline, 1.0))
            speeds = read.groupby("profile")["measured_speedup"].mean()
            speed_ratio = float(speeds["spdy"] / speeds[baseline])
            part = _at_equal_speed(verdict(diff), speed_ratio)
            if t in top:
                parts.append(part)
            elif part == NOT_REPRODUCED:
                parts.append(NOT_REPRODUCED)
            text = f"{t:g}x {diff.format(scale=100.0, signed=True)}"
            if moved:
                text += (
                    f" ({baseline} read at SPDY's measured speed on {moved} of {len(base)} seeds)"
                )
            if abs(speed_ratio - 1.0) >= EQUAL_SPEED_TOLERANCE:
                text += f" (SPDY measured {speed_ratio:.2f}x {baseline}'s speed)"
            texts.append(text)
        if not texts:
            continue
        result = combine(parts)
        if result == REPRODUCED and not order_ok:
            result = INCONCLUSIVE
        n = int(runs[runs["profile"] == "spdy"]["seed"].nunique())
        uni = runs[(runs["profile"] == "uniform") & (runs["target"] == targets[-1])]["acc"].mean()
        claims.append(
            Claim(
                paper="SPDY",
                key=f"spdy.{model}.above_{baseline}",
                claim=f"{model}: at equal measured speedup (where a seed's models measured "
                f"more than {EQUAL_SPEED_TOLERANCE:.0%} apart, {baseline}'s accuracy read at "
                f"SPDY's speed off its own runs), SPDY's profile beats {label} after gradual "
                "pruning (Table 4): ahead by more than the paired 95% interval at the two "
                "highest targets, never behind on average",
                measured=f"n={n} seeds, SPDY minus {baseline} (points) "
                + "; ".join(texts)
                + f"; dense {100 * dense:.2f}%, uniform at {targets[-1]:g}x "
                f"{100 * uni:.2f}%",
                verdict=result,
            )
        )
    spdy = runs[runs["profile"] == "spdy"]
    if not spdy.empty:
        ratio = spdy["measured_speedup"] / spdy["target"]
        claims.append(
            Claim(
                paper="SPDY",
                key=f"spdy.{model}.meets_target",
                claim=f"{model}: every SPDY model reaches its target speedup, measured end to "
                f"end (at least {SPEEDUP_TOLERANCE:g} x target)",
                measured=f"n={len(spdy)} models, measured / target {ratio.min():.3f} to "
                f"{ratio.max():.3f}",
                verdict=REPRODUCED if ratio.min() >= SPEEDUP_TOLERANCE else NOT_REPRODUCED,
            )
        )
    return claims


def spdy_claims(params: Params) -> list[Claim]:
    """SPDY's claims as this run tested them, from each model's gradual-pruning results
    (none for a model whose results table is absent)."""
    claims = []
    for model in params.spdy.models:
        p = config.scoped(params, f"spdy:{model}")
        path = schemas.results_file(p)
        if not path.is_file():
            continue
        runs = schemas.RESULTS.read(path)
        runs.attrs["test_size"] = test_size(layout.labels_table(p))
        claims += _model_claims(model, runs)
    return claims

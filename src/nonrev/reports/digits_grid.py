"""Report of a learned-model grid on digits (a sweep of
:func:`nonrev.experiments.digits_grid.digits_cell`): which current a learned model
gains from, read off the sweep's table.

Writes ``fd_vs_nfe.png`` (digits Frechet distance against NFE, best sampler of each
setting, mean over seeds with the range as error bars) and ``report.md``: the setting
table, the comparison asked of every non-reversible setting (its Frechet distance at
NFE 20 against the best reversible setting with the same U), and findings in words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nonrev.reports.plotting import figure, fmt, save_figure

#: Keys that name a setting (everything a cell varies except the training seed).
SETTING_KEYS = ("u", "q", "parametrisation", "time_sampling")
#: The NFE at which the comparison of the learned-model issue is made.
TARGET_NFE = 20
#: A non-reversible setting "matches" the reversible one within this factor.
MATCH_FACTOR = 1.1


def _quality_columns(table) -> dict:
    """``{(method, nfe): column}`` of the Frechet-distance columns."""
    out = {}
    for col in table.columns:
        parts = col.split(".")
        if len(parts) == 4 and parts[0] == "quality" and parts[3] == "frechet":
            out[(parts[1], int(parts[2]))] = col
    return out


def settings_summary(table) -> list[dict]:
    """One row per setting: the Frechet distance per (method, NFE) as mean, min and
    max over seeds, the best method at each NFE, and the process figures."""
    ok = table[table["status"] == "ok"]
    cols = _quality_columns(ok)
    keys = [k for k in SETTING_KEYS if k in ok]
    rows = []
    for values, group in ok.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values))
        row["seeds"] = sorted(int(s) for s in group["seed"]) if "seed" in group else []
        row["fd"] = {
            k: (float(group[c].mean()), float(group[c].min()), float(group[c].max()))
            for k, c in cols.items()
        }
        if "seed" in group:
            row["fd_by_seed"] = {
                k: {int(s): float(v) for s, v in zip(group["seed"], group[c])}
                for k, c in cols.items()
            }
        for name in (
            "rate",
            "q_norm",
            "a_norm",
            "u_condition",
            "final_loss",
            "train_seconds",
            "memorised_fraction",
        ):
            if name in group:
                row[name] = float(group[name].mean())
        rows.append(row)
    return rows


def _best(row: dict, nfe: int):
    """``(method, (mean, lo, hi))`` of the lowest mean Frechet distance at ``nfe``."""
    cands = [(m, v) for (m, n), v in row["fd"].items() if n == nfe]
    return min(cands, key=lambda mv: mv[1][0]) if cands else (None, (np.nan,) * 3)


def _name(row: dict) -> str:
    return f"U={row['u']}, Q={row['q']}, {row.get('parametrisation', 'gaussian')}" + (
        ", snr grid" if row.get("time_sampling") == "snr" else ""
    )


def comparisons(rows: list[dict], nfe: int = TARGET_NFE) -> list[dict]:
    """Every non-reversible setting against the best reversible one with the same U
    at ``nfe`` (best sampler of each, by the mean over seeds): the ratio of the means
    and, paired by training seed, the ratio on each seed both were run with.
    ``matches_on_every_seed``: every paired ratio <= 1.1; ``better_on_every_seed``:
    every paired ratio <= 0.9 (without seeds in the table, the means decide)."""
    out = []
    for u in dict.fromkeys(r["u"] for r in rows):
        rev = [r for r in rows if r["u"] == u and r["q"] == "none"]
        if not rev:
            continue
        ref = min(rev, key=lambda r: _best(r, nfe)[1][0])
        ref_method, (ref_mean, _, _) = _best(ref, nfe)
        for r in rows:
            if r["u"] != u or r["q"] == "none":
                continue
            method, (mean, _, _) = _best(r, nfe)
            mine = r.get("fd_by_seed", {}).get((method, nfe), {})
            theirs = ref.get("fd_by_seed", {}).get((ref_method, nfe), {})
            paired = {s: mine[s] / theirs[s] for s in sorted(set(mine) & set(theirs))}
            worst = max(paired.values()) if paired else mean / ref_mean
            out.append(
                {
                    "setting": _name(r),
                    "method": method,
                    "fd": mean,
                    "reference": _name(ref),
                    "reference_method": ref_method,
                    "reference_fd": ref_mean,
                    "ratio": mean / ref_mean,
                    "ratio_by_seed": paired,
                    "matches_on_every_seed": bool(worst <= MATCH_FACTOR),
                    "better_on_every_seed": bool(worst <= 2.0 - MATCH_FACTOR),
                }
            )
    return out


def figure_fd(rows: list[dict], path: Path) -> None:
    fig, ax = figure(figsize=(7.5, 4.5))
    for r in rows:
        nfes = sorted({n for (_, n) in r["fd"]})
        best = [_best(r, n) for n in nfes]
        mean = np.array([b[1][0] for b in best])
        err = np.array([[b[1][0] - b[1][1], b[1][2] - b[1][0]] for b in best]).T
        style = "-" if r["q"] == "none" else "--"
        ax.errorbar(nfes, mean, yerr=err, fmt="o" + style, capsize=3, label=_name(r))
    ax.set_xscale("log")
    ax.set_yscale("log")
    nfes = sorted({n for r in rows for (_, n) in r["fd"]})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ticks = [
        t
        for t in (1, 2, 3, 5, 10, 20, 30, 50, 100)
        if t
        <= 2 * max((v[0] for r in rows for v in r["fd"].values() if np.isfinite(v[0])), default=1)
    ]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("score evaluations per sample (NFE)")
    ax.set_ylabel("digits Frechet distance (best sampler)")
    ax.set_title("Learned models: solid Q = 0, dashed Q != 0 (range over seeds)")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def findings(rows: list[dict], comps: list[dict], nfe: int = TARGET_NFE) -> list[str]:
    """Plain statements read off the numbers."""
    out = []
    for c in comps:
        verdict = (
            "better by 10% or more on every seed"
            if c["better_on_every_seed"]
            else f"within {MATCH_FACTOR}x on every seed"
            if c["matches_on_every_seed"]
            else f"not within {MATCH_FACTOR}x on every seed"
        )
        seeds = ", ".join(f"seed {s}: {v:.2f}" for s, v in c["ratio_by_seed"].items())
        out.append(
            f"{c['setting']}: Frechet distance {fmt(c['fd'])} at NFE {nfe} "
            f"({c['method']}) against {fmt(c['reference_fd'])} for the best "
            f"reversible setting with the same U ({c['reference']}, "
            f"{c['reference_method']}): ratio {c['ratio']:.2f}"
            + (f" ({seeds})" if seeds else "")
            + f", {verdict}."
        )
    by = {(r["u"], r["q"], r.get("parametrisation"), r.get("time_sampling")): r for r in rows}
    for (u, q, p, ts), r in by.items():
        if p == "data_frame" and (u, q, "gaussian", ts) in by:
            g = by[u, q, "gaussian", ts]
            a, b = _best(r, nfe)[1][0], _best(g, nfe)[1][0]
            out.append(
                f"Data-frame parametrisation for U={u}, Q={q}: {fmt(a)} against "
                f"{fmt(b)} with the Gaussian preconditioning at NFE {nfe} "
                f"({'better' if a < b else 'worse'} by {abs(a / b - 1) * 100:.0f}%)."
            )
        if ts == "snr" and (u, q, p, "log") in by:
            g = by[u, q, p, "log"]
            a, b = _best(r, nfe)[1][0], _best(g, nfe)[1][0]
            out.append(
                f"Noise-level training grid for U={u}, Q={q}, {p}: {fmt(a)} against "
                f"{fmt(b)} on the log grid at NFE {nfe}."
            )
    return out


def write_digits_grid_report(table, out) -> list[Path]:
    """Write ``fd_vs_nfe.png`` and ``report.md`` for a digits-grid sweep table into
    ``out``; returns their paths (none when no cell finished)."""
    out = Path(out)
    rows = settings_summary(table)
    if not rows:
        return []
    comps = comparisons(rows)
    figure_fd(rows, out / "fd_vs_nfe.png")
    nfes = sorted({n for r in rows for (_, n) in r["fd"]})
    methods = list(dict.fromkeys(m for r in rows for (m, _) in r["fd"]))
    L = [
        "# Learned models on digits: which current pays",
        "",
        "Each setting trained with the same budget on every seed; quality is the digits "
        "Frechet distance to the held-out test set (nonrev.experiments.digits_quality; "
        "real digits score about 1.7 +- 0.6 against it). Mean over seeds, range in "
        "brackets.",
        "",
        "## Comparison at NFE " + str(TARGET_NFE),
        "",
    ]
    L += [f"* {f}" for f in findings(rows, comps)] or ["* No setting with Q != 0 in the grid."]
    L += [
        "",
        "## Processes",
        "",
        "| setting | seeds | rate | ‖Q‖ | ‖A‖ | cond U | final loss | memorised |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        L.append(
            f"| {_name(r)} | {len(r['seeds'])} | {fmt(r.get('rate'))} | "
            f"{fmt(r.get('q_norm'))} | {fmt(r.get('a_norm'))} | {fmt(r.get('u_condition'))} "
            f"| {fmt(r.get('final_loss'))} | {fmt(r.get('memorised_fraction'))} |"
        )
    L += [
        "",
        "## Frechet distance by sampler and NFE",
        "",
        "| setting | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---|" * len(nfes),
    ]
    for r in rows:
        for m in methods:
            cells = []
            for n in nfes:
                v = r["fd"].get((m, n))
                cells.append("" if v is None else f"{fmt(v[0])} [{fmt(v[1])}, {fmt(v[2])}]")
            L.append(f"| {_name(r)} | {m} | " + " | ".join(cells) + " |")
    L += ["", "![Frechet distance against NFE](fd_vs_nfe.png)", ""]
    (out / "report.md").write_text("\n".join(L))
    return [out / "fd_vs_nfe.png", out / "report.md"]

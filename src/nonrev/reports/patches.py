"""The written report of the patch study (:mod:`nonrev.experiments.patch_study`): a
table per metric, the verdict in words, sample grids; the tables and the verdict come
from the results dict alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nonrev.data.datasets import write_image_grid
from nonrev.experiments.digits_study import model_label
from nonrev.reports.plotting import fmt

METRICS = (("sliced_w2", "sliced W2 (pixels in [0, 1])"), ("psd_db", "power-spectrum error (dB)"))


def _best(res: dict, spec: str, nfe: int) -> list[dict]:
    """The best method's row for every seed."""
    seeds = res["models"][spec]["seeds"]
    return [seeds[s]["best"][str(nfe)] for s in sorted(seeds, key=int)]


def table_lines(res: dict, key: str) -> list[str]:
    """Markdown rows: model, T, then per NFE the best method and the metric per seed."""
    nfes = res["config"]["nfe"]
    head = "| model | rate | T | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    rows = [head, "|" + "---|" * (3 + len(nfes))]
    for spec, entry in res["models"].items():
        cells = []
        for n in nfes:
            best = _best(res, spec, n)
            vals = " / ".join(fmt(b[key]) for b in best)
            cells.append(f"{vals} ({', '.join(sorted({b['method'] for b in best}))})")
        rate = entry["process"]["rate"]
        rows.append(
            f"| {model_label(spec)} | {fmt(rate)} | {fmt(entry['T'])} | " + " | ".join(cells) + " |"
        )
    refs = res["references"]
    for name, label in (("floor", "real vs real (floor)"), ("gaussian_fit", "Gaussian fit")):
        r = refs[name]
        val = f"{fmt(r[key])} +- {fmt(r[key + '_sd'])}"
        rows.append(f"| {label} | | | " + " | ".join(val for _ in nfes) + " |")
    return rows


def verdict_lines(res: dict) -> list[str]:
    """Which setting pays, per NFE: the model whose worst seed beats every other model's
    best seed by more than the floor's spread (2 sd) in sliced W2; otherwise a tie."""
    floor = res["references"]["floor"]
    noise = 2.0 * floor["sliced_w2_sd"]
    out = []
    for n in res["config"]["nfe"]:
        worst = {s: max(b["sliced_w2"] for b in _best(res, s, n)) for s in res["models"]}
        best = {s: min(b["sliced_w2"] for b in _best(res, s, n)) for s in res["models"]}
        winner = min(worst, key=worst.get)
        others = [best[s] for s in best if s != winner]
        if others and worst[winner] + noise < min(others):
            out.append(
                f"NFE {n}: {model_label(winner)} pays (sliced W2 at most {fmt(worst[winner])} on "
                f"every seed, the others at least {fmt(min(others))}; floor "
                f"{fmt(floor['sliced_w2'])} +- {fmt(floor['sliced_w2_sd'])})."
            )
        else:
            out.append(
                f"NFE {n}: no setting is better on both seeds by more than the floor's spread "
                f"(best per model: "
                + ", ".join(f"{model_label(s)} {fmt(best[s])}" for s in best)
                + ")."
            )
    return out


def write_patch_report(res: dict, out, grids: dict | None = None) -> None:
    """report.md (and, with ``grids``, samples_<model>.png and real.png) in ``out``."""
    out = Path(out)
    shape = res["data"]["shape"]
    pictures = []
    for name, X in (grids or {}).items():
        file = "real.png" if name == "real" else f"samples_{name.replace('/', '_')}.png"
        write_image_grid(np.asarray(X), shape, out / file, value_range=(0.0, 255.0), ncols=8)
        pictures.append((name, file))
    cfg = res["config"]
    lines = [
        "# Patch study: the frequency-shaped process and its current on photo patches",
        "",
        f"{res['data']['n_train']} training and {res['data']['n_test']} held-out grayscale "
        f"{shape[1]}x{shape[2]} patches of scikit-learn's two sample photos; "
        f"{cfg['train']['steps']} training steps of a {cfg['train']['network']} "
        f"(batch {cfg['train']['batch_size']}) per model and seed; seeds "
        f"{', '.join(str(s) for s in cfg['seeds'])}; {cfg['n_samples']} samples per "
        "entry. Each entry: the best of "
        f"{', '.join(cfg['methods'])} by sliced W2 (its name in brackets), values per seed "
        "(a / b). T: the start of the reverse run (6 / rate).",
        "",
    ]
    for key, title in METRICS:
        lines += [f"## {title}", "", *table_lines(res, key), ""]
    lines += ["## Verdict (sliced W2)", "", *[f"- {v}" for v in verdict_lines(res)], ""]
    if pictures:
        lines += ["## Samples (first seed, largest NFE)", ""]
        lines += [f"- {name}: ![{name}]({file})" for name, file in pictures]
        lines.append("")
    lines.append(f"Runtime {res['runtime_s']:.0f} s (nonrev {res['version']}).")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def summary_lines(res: dict) -> list[str]:
    """The sliced-W2 table and the verdict, for the terminal."""
    return table_lines(res, "sliced_w2") + verdict_lines(res)

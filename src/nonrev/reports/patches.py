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


def _winner(res: dict, key: str, nfe: int) -> str:
    """One metric at one NFE in words: the model whose worst seed beats every other
    model's best seed by more than twice the floor's spread, or a tie."""
    floor = res["references"]["floor"]
    noise = 2.0 * floor[key + "_sd"]
    worst = {s: max(b[key] for b in _best(res, s, nfe)) for s in res["models"]}
    best = {s: min(b[key] for b in _best(res, s, nfe)) for s in res["models"]}
    winner = min(worst, key=worst.get)
    others = [best[s] for s in best if s != winner]
    if others and worst[winner] + noise < min(others):
        return (
            f"{model_label(winner)} is better on every seed ({fmt(worst[winner])} at most, "
            f"the others {fmt(min(others))} at least)"
        )
    return "no setting is better on every seed by more than twice the floor's spread (" + (
        ", ".join(f"{model_label(s)} {fmt(best[s])}" for s in best) + ")"
    )


def verdict_lines(res: dict) -> list[str]:
    """Per NFE and metric, which setting pays (see :func:`_winner`); then whether any
    model beats the Gaussian fit (a model that does not has learned no more than the
    second moments, which the Gaussian preconditioning gives it for free)."""
    out = []
    for n in res["config"]["nfe"]:
        parts = [f"{title.split(' (')[0]}: {_winner(res, key, n)}" for key, title in METRICS]
        out.append(f"NFE {n}: " + "; ".join(parts) + ".")
    fit = res["references"]["gaussian_fit"]
    for key, title in METRICS:
        best = min(
            b[key] for s in res["models"] for n in res["config"]["nfe"] for b in _best(res, s, n)
        )
        line = f"{title.split(' (')[0]}: best model {fmt(best)}, Gaussian fit {fmt(fit[key])}"
        if best < fit[key] - 2.0 * fit[key + "_sd"]:
            out.append(line + ": the networks learned more than the second moments.")
        elif best <= fit[key] + 2.0 * fit[key + "_sd"]:
            out.append(
                line + ": no model beats the Gaussian fit, so at this budget the networks "
                "learned little beyond the second moments; the differences above are the "
                "samplers' and the processes'."
            )
        else:
            out.append(
                line + ": every model is further from the data than the Gaussian fit, so "
                "at this budget the networks add an error of their own to the Gaussian core."
            )
    return out


def write_patch_report(res: dict, out, grids: dict | None = None) -> None:
    """report.md (and, with ``grids``, samples_<model>.png and real.png) in ``out``;
    without ``grids`` (rebuilding a report from results.json) the pictures already in
    ``out`` are linked."""
    out = Path(out)
    shape = res["data"]["shape"]
    pictures = []
    for name in ["real", *res["models"]]:
        file = "real.png" if name == "real" else f"samples_{name.replace('/', '_')}.png"
        if grids is not None and name in grids:
            write_image_grid(
                np.asarray(grids[name]), shape, out / file, value_range=(0.0, 255.0), ncols=8
            )
        if (out / file).is_file():  # written now, or by the run this report is rebuilt from
            pictures.append((name if name == "real" else model_label(name), file))
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
    lines += ["## Verdict", "", *[f"- {v}" for v in verdict_lines(res)], ""]
    if pictures:
        lines += ["## Samples (first seed, largest NFE)", ""]
        lines += [f"- {name}: ![{name}]({file})" for name, file in pictures]
        lines.append("")
    lines.append(f"Runtime {res['runtime_s']:.0f} s (nonrev {res['version']}).")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def summary_lines(res: dict) -> list[str]:
    """The sliced-W2 table and the verdict, for the terminal."""
    return table_lines(res, "sliced_w2") + verdict_lines(res)

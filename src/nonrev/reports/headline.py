"""Figures and the written report of the headline experiment, from its results dict
alone (so a report can be rebuilt from a saved results.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nonrev.reports.plotting import colormap, colour, figure, plot_phi, save_figure
from nonrev.reports.plotting import fmt as _fmt

COLORS = {"none": "tab:blue", "optimal": "tab:red", "steered": "tab:green"}


def _color(q: str, k: int) -> str:
    return colour(q, k, COLORS)


def figure_relaxation(res: dict, path: Path) -> None:
    rel = res["relaxation"]
    t = np.asarray(rel["times"])
    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4))
    for k, row in enumerate(rel["currents"]):
        c = _color(row["q"], k)
        ax1.plot(t, row["norm_curve"], color=c, label=f"Q: {row['q']} (rate {row['rate']:.3g})")
        kl = np.asarray(row["kl_curve"], dtype=float)
        ax2.semilogy(
            t[1:], kl[1:], color=c, label=f"Q: {row['q']}, horizon T = {row['horizon']:.2f}"
        )
        ax2.axvline(row["horizon"], color=c, ls=":", lw=1)
    ax1.plot(
        t,
        np.exp(-rel["bound"] * t),
        "k--",
        lw=1,
        label=f"exp(-t Tr(U)/d), bound {rel['bound']:.3g}",
    )
    ax1.set_yscale("log")
    ax1.set_xlabel("forward time t (intrinsic units)")
    ax1.set_ylabel("||exp(-tA)||_2")
    ax1.set_title("Decay of the mean")
    ax1.legend(fontsize=8)
    ax2.axhline(rel["kl_level"], color="gray", ls="--", lw=1, label=f"KL = {rel['kl_level']:g}")
    ax2.set_ylim(bottom=1e-8)
    ax2.set_xlabel("forward time t (intrinsic units)")
    ax2.set_ylabel("KL(P_t || N(0, U^-1)) (nats)")
    ax2.set_title("Distance to the noise law")
    ax2.legend(fontsize=8)
    save_figure(fig, path)


def figure_speciation(res: dict, path: Path) -> None:
    rows = res["speciation"]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    fig, axes = figure(1, len(directions), figsize=(5 * len(directions), 4), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        for k, r in enumerate(x for x in rows if x["direction"] == direction):
            plot_phi(ax, r, _color(r["q"], k), f"Q: {r['q']}")
        ax.axhline(
            rows[0]["threshold"],
            color="gray",
            ls=":",
            lw=1,
            label=f"phi = {rows[0]['threshold']:.3f}",
        )
        ax.set_xlabel("branch time t (intrinsic units)")
        ax.set_ylabel("phi(t) = P(clones in the same class)")
        ax.set_title(f"Classes split along the {direction}est direction of U")
        ax.set_ylim(0.4, 1.02)
        ax.legend(fontsize=7, loc="lower left")  # phi falls to the right: that corner is empty
    save_figure(fig, path)


def figure_collapse(res: dict, path: Path) -> None:
    rows = res["collapse"]
    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4))
    for k, r in enumerate(rows):
        c = _color(r["q"], k)
        ax1.hist(
            r["lock_times"],
            bins=30,
            histtype="step",
            color=c,
            density=True,
            label=f"Q: {r['q']} median {r['t_measured']:.3f}",
        )
        ax1.axvline(
            r["t_predicted"],
            color=c,
            ls="--",
            label=f"Q: {r['q']} predicted t_C {r['t_predicted']:.3f}",
        )
        if "t_predicted_finite" in r:
            ax1.axvline(
                r["t_predicted_finite"],
                color=c,
                ls=":",
                label=f"Q: {r['q']} finite-N t_C {r['t_predicted_finite']:.3f}",
            )
        e = r["entropy"]
        ax2.plot(e["times"], e["measured"], "o", color=c, label=f"Q: {r['q']} Monte Carlo")
        ax2.plot(e["times"], e["theory"], "-", color=c, label=f"Q: {r['q']} theory")
        ax2.axvline(r["t_predicted"], color=c, ls="--", lw=1)
    ax1.set_xlabel("lock time (intrinsic units)")
    ax1.set_ylabel("density")
    ax1.set_title(
        f"When trajectories lock onto a training point (N = {rows[0]['n_train']}, d = {rows[0]['dim']})"
    )
    ax1.legend(fontsize=7)
    ax2.set_xlabel("forward time t (intrinsic units)")
    ax2.set_ylabel("excess entropy f(t) (nats per dimension)")
    ax2.set_title("Excess entropy of the empirical law")
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def figure_steering(res: dict, path: Path) -> None:
    st = res["steering"]
    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4))
    for k, r in enumerate(st["rows"]):
        plot_phi(ax1, r, _color(r["q"], k), f"Q: {r['q']}")
    ax1.axhline(st["rows"][0]["threshold"], color="gray", ls=":", lw=1)
    ax1.set_xlabel("branch time t (intrinsic units)")
    ax1.set_ylabel("phi(t) = P(clones in the same class)")
    ax1.set_title(f"Classes split along the {st['direction']}est direction of U")
    ax1.set_ylim(0.4, 1.02)
    ax1.legend(fontsize=7)
    names = [r["q"] for r in st["rows"]]
    x = np.arange(len(names))
    for j, (key, label) in enumerate(
        (
            ("t_predicted", "t_S predicted"),
            ("t_measured", "t_S measured"),
            ("t_collapse", "t_C predicted"),
        )
    ):
        vals = [r[key] if r[key] is not None and np.isfinite(r[key]) else 0.0 for r in st["rows"]]
        ax2.bar(
            x + (j - 1) * 0.27, vals, 0.27, label=label, color=colormap("Greys")(0.35 + 0.25 * j)
        )
    ax2.set_xticks(
        x,
        [
            f"Q: {n}\nrate {r['rate']:.2f}, ||Q|| {r['q_norm']:.1f}"
            for n, r in zip(names, st["rows"])
        ],
        fontsize=8,
    )
    ax2.set_ylabel("time (intrinsic units)")
    ax2.set_title(f"Same budget ||Q||_2 <= {st['q_norm_max']:.2f}, objective {st['objective']}")
    ax2.legend(fontsize=8)
    save_figure(fig, path)


def summary_rows(res: dict) -> list[tuple]:
    """(regime, case, predicted, measured, relative error) rows for tables."""
    out = []
    for r in res["speciation"]:
        out.append(
            (
                "speciation",
                f"{r['direction']} / Q {r['q']}",
                r["t_predicted"],
                r["t_measured"],
                r["rel_error"],
            )
        )
    for r in res["collapse"]:
        out.append(
            (
                "collapse",
                f"N={r['n_train']} d={r['dim']} / Q {r['q']}",
                r["t_predicted"],
                r["t_measured"],
                r["rel_error"],
            )
        )
    for r in (res.get("steering") or {}).get("rows", []):
        if r["q"] == "steered":
            out.append(
                (
                    "speciation",
                    f"{res['steering']['direction']} / Q steered",
                    r["t_predicted"],
                    r["t_measured"],
                    r["rel_error"],
                )
            )
    return out


def _markdown_table(res: dict) -> str:
    lines = [
        "| regime | case | predicted t | measured t | measured / predicted - 1 |",
        "|---|---|---|---|---|",
    ]
    for regime, case, tp, tm, err in summary_rows(res):
        lines.append(f"| {regime} | {case} | {_fmt(tp)} | {_fmt(tm)} | {_fmt(100 * err)}% |")
    return "\n".join(lines)


def write_report(res: dict, out_dir) -> list[str]:
    """Write the figures (PNG) and report.md into ``out_dir``; returns the file names."""
    out = Path(out_dir)
    figure_relaxation(res, out / "relaxation.png")
    figure_speciation(res, out / "speciation.png")
    figure_collapse(res, out / "collapse.png")
    rel = res["relaxation"]
    cfg = res["config"]
    by = {(r["direction"], r["q"]): r for r in res["speciation"]}
    coll = {r["q"]: r for r in res["collapse"]}
    cur = {r["q"]: r for r in rel["currents"]}
    lines = [
        "# Non-reversible diffusion: relaxation, speciation and collapse",
        "",
        f"U has eigenvalues evenly spread over [{cfg['spectrum_min']}, {cfg['spectrum_max']}] "
        f"in a random basis (d = {cfg['dim']}, seed {cfg['seed']}); the current is "
        f"Q = gamma * Q_optimal for gamma in {cfg['gammas']}. All times are in the intrinsic "
        f"clock of dx = -(I+Q)U x dt + sqrt(2) dW. Run time {res['runtime_s']:.0f} s.",
        "",
        "## Summary",
        "",
        _markdown_table(res),
        "",
        "## 1. Relaxation",
        "",
        "![relaxation](relaxation.png)",
        "",
        f"The reversible process relaxes at lambda_min(U) = {rel['reversible_rate']:.3g}; the optimal "
        f"current reaches {_fmt(rel['optimal_rate'])}, the bound Tr(U)/d = {rel['bound']:.3g} "
        f"({rel['bound'] / rel['reversible_rate']:.2f}x faster).",
    ]
    if "none" in cur and "optimal" in cur:
        lines.append(
            f"The reverse process can start from the noise law sooner: KL(P_T || N(0, U^-1)) "
            f"falls to {rel['kl_level']:g} at T = {cur['none']['horizon']:.2f} without the current and "
            f"T = {cur['optimal']['horizon']:.2f} with it. The price is a non-normal drift: "
            f"||Q|| = {cur['optimal']['q_norm']:.2f}, and ||exp(-tA)|| peaks at "
            f"{cur['optimal']['transient']:.2f} before it decays (left panel)."
        )
    lines += ["", "## 2. Speciation", "", "![speciation](speciation.png)", ""]
    if all(
        k in by
        for k in [("slow", "none"), ("slow", "optimal"), ("fast", "none"), ("fast", "optimal")]
    ):
        s0, s1, f0, f1 = (
            by["slow", "none"],
            by["slow", "optimal"],
            by["fast", "none"],
            by["fast", "optimal"],
        )
        lines.append(
            f"The optimal current does not simply speed speciation up: it equalises the directions. "
            f"Classes split along the slowest direction of U speciate at t_S = {s0['t_predicted']:.2f} "
            f"without the current and {s1['t_predicted']:.2f} with it; along the fastest direction the "
            f"move is the other way, {f0['t_predicted']:.2f} to {f1['t_predicted']:.2f}. "
            f"Dashed lines are predictions; dots are phi(t) from {cfg['speciation']['n_pairs']} clone "
            f"pairs with 95% bootstrap bands, and the measured t_S is where phi crosses "
            f"{s0['threshold']:.3f}."
        )
    worst = max(
        res["speciation"],
        key=lambda r: abs(r["rel_error"]) if np.isfinite(r["rel_error"]) else np.inf,
    )
    lines.append(
        f"The largest gap between measurement and theory is {_fmt(100 * worst['rel_error'])}% "
        f"({worst['direction']} / Q {worst['q']}); the interval of the crossing there is "
        f"[{_fmt(worst['t_measured_low'])}, {_fmt(worst['t_measured_high'])}]."
    )
    lines += ["", "## 3. Collapse", "", "![collapse](collapse.png)", ""]
    if "none" in coll and "optimal" in coll:
        c0, c1 = coll["none"], coll["optimal"]
        move = 100 * (c1["t_predicted"] / c0["t_predicted"] - 1)
        lines.append(
            f"Collapse barely moves: the predicted t_C is {c0['t_predicted']:.3f} without and "
            f"{c1['t_predicted']:.3f} with the optimal current ({move:+.1f}%), because det M_t and the "
            f"small-t noise do not depend on Q. Measured median lock times are {c0['t_measured']:.3f} "
            f"and {c1['t_measured']:.3f} (quartiles {c0['t_measured_q25']:.2f}-{c0['t_measured_q75']:.2f} "
            f"and {c1['t_measured_q25']:.2f}-{c1['t_measured_q75']:.2f}); "
            f"memorised fractions {c0['memorised_fraction']:.2f} and {c1['memorised_fraction']:.2f}."
        )
    if "none" in coll and "t_predicted_finite" in coll["none"]:
        c0 = coll["none"]
        lines.append(
            f"The finite-N prediction of the median lock time (a forward-path Monte Carlo, "
            f"docs/THEORY.md section 4) is {c0['t_predicted_finite']:.3f} for Q = 0, against "
            f"{c0['t_measured']:.3f} measured and {c0['t_predicted']:.3f} asymptotic."
        )
    lines.append(
        "Lock times sit a few percent above the asymptotic (random-energy-model) prediction, a "
        "finite-size effect seen at every size tried so far (docs/THEORY.md, section 4). The Monte "
        "Carlo excess entropy (right) is near 0 well below t_C and meets the theory curve well above "
        "it; near t_C it lags the theory, so it is a poor estimator of t_C itself."
    )
    files = ["results.json", "report.md", "relaxation.png", "speciation.png", "collapse.png"]
    if res.get("steering"):
        st = res["steering"]
        figure_steering(res, out / "steering.png")
        files.append("steering.png")
        r0, r1, r2 = ({r["q"]: r for r in st["rows"]}[q] for q in ("none", "optimal", "steered"))
        lines += [
            "",
            "## 4. Steering",
            "",
            "![steering](steering.png)",
            "",
            f"The current can also be chosen for a goal (nonrev.steer_q). Within the optimal current's "
            f"stiffness budget ||Q||_2 <= {st['q_norm_max']:.2f}, the current that maximises t_S for the "
            f"{st['direction']}-direction split moves the predicted t_S to {r2['t_predicted']:.2f}, against "
            f"{r0['t_predicted']:.2f} with Q = 0 and {r1['t_predicted']:.2f} with the optimal current; cloning "
            f"measures {_fmt(r2['t_measured'])}, {_fmt(r0['t_measured'])} and "
            f"{_fmt(r1['t_measured'])}. The steered current relaxes at {r2['rate']:.3g}, the optimal "
            f"one at {r1['rate']:.3g} (Q = 0: {r0['rate']:.3g}). The predicted t_C for N = "
            f"{st['n_train']} points of the mixture is {r0['t_collapse']:.3f}, {r1['t_collapse']:.3f} and "
            f"{r2['t_collapse']:.3f} ({100 * (r2['t_collapse'] / r0['t_collapse'] - 1):+.1f}% from Q = 0 "
            f"to steered, against {100 * (r2['t_predicted'] / r0['t_predicted'] - 1):+.0f}% for t_S). The search "
            f"(best start: {st['search']['start']}) took {st['search']['runtime_s']:.1f} s and "
            f"{st['search']['kernel_evaluations']} kernel evaluations.",
        ]
    lines += [
        "",
        "## Files",
        "",
        "results.json holds every number above, the configuration and the versions.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return files

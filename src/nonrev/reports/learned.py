"""Figures and the written report of the digits study (learned scores), from its
results dict alone, so a report can be rebuilt from a saved results.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nonrev.data.datasets import write_image_grid
from nonrev.reports.plotting import colour, figure, plot_phi, save_figure
from nonrev.reports.plotting import fmt as _fmt

COLORS = {"identity/none": "tab:gray", "data/none": "tab:blue", "data/optimal": "tab:red"}


def _color(spec: str, k: int) -> str:
    return colour(spec, k, COLORS)


def figure_quality(res: dict, path: Path) -> None:
    ref = res["reference"]
    fig, axes = figure(1, 3, figsize=(14, 4))
    for key, ax, name in zip(
        ("sliced_w2", "mmd", "class_tv"),
        axes,
        ("sliced W2 (pixels)", "MMD^2 (RBF)", "class-balance TV"),
    ):
        for k, r in enumerate(res["models"]):
            nfe = [e["nfe"] for e in r["nfe"]]
            ax.plot(
                nfe, [e[key] for e in r["nfe"]], "o-", color=_color(r["spec"], k), label=r["label"]
            )
        ax.axhspan(
            ref[key] - 2 * ref[key + "_sd"],
            ref[key] + 2 * ref[key + "_sd"],
            color="k",
            alpha=0.12,
            label="real training digits (+-2 sd)",
        )
        ax.axhline(
            res["gaussian_fit"][key], color="k", ls="--", lw=1, label="Gaussian fit N(mean, C)"
        )
        ax.set_xscale("log")
        ax.set_xlabel("score evaluations per sample (NFE)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} to the test set")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def figure_horizon(res: dict, path: Path) -> None:
    ref = res["reference"]
    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4))
    for k, r in enumerate(res["models"]):
        T = [e["T"] for e in r["horizon"]]
        c = _color(r["spec"], k)
        ax1.plot(T, [e["sliced_w2"] for e in r["horizon"]], "o-", color=c, label=r["label"])
        ax2.semilogy(
            T, [max(e["kl_gaussian"], 1e-16) for e in r["horizon"]], "o-", color=c, label=r["label"]
        )
    ax1.axhspan(
        ref["sliced_w2"] - 2 * ref["sliced_w2_sd"],
        ref["sliced_w2"] + 2 * ref["sliced_w2_sd"],
        color="k",
        alpha=0.12,
        label="real training digits",
    )
    nfe = res["models"][0]["horizon"][0]["nfe"] if res["models"] else 0
    ax1.set_xlabel("start time T of the reverse process")
    ax1.set_ylabel("sliced W2 to the test set (pixels)")
    ax1.set_title(f"Quality versus horizon (NFE {nfe})")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("T")
    ax2.set_ylabel("KL(P_T || N(0, U^-1)) (nats, Gaussian moment match)")
    ax2.set_title("Distance of P_T to the starting law")
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def figure_speciation(res: dict, path: Path) -> None:
    fig, ax = figure(figsize=(6.5, 4.2))
    for k, r in enumerate(res["models"]):
        plot_phi(ax, r["speciation"], _color(r["spec"], k), f"{r['label']}:")
    if res["models"]:
        ax.axhline(
            res["models"][0]["speciation"]["threshold"],
            color="gray",
            ls=":",
            lw=1,
            label="threshold",
        )
    ax.set_xscale("log")
    ax.set_xlabel("branch time t (intrinsic units)")
    ax.set_ylabel("phi(t) = P(both clones give the same digit)")
    ax.set_title("Speciation measured by cloning (dashed: predicted t_S)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def figure_memorisation(res: dict, path: Path) -> None:
    fig, ax = figure(figsize=(5.5, 4))
    for k, r in enumerate(res["models"]):
        n = [e["n_train"] for e in r["memorisation"]]
        f = np.array([e["fraction"] for e in r["memorisation"]])
        se = np.array([e["fraction_se"] for e in r["memorisation"]])
        ax.errorbar(
            n, f, yerr=2 * se, fmt="o-", color=_color(r["spec"], k), capsize=3, label=r["label"]
        )
    ax.set_xscale("log")
    ax.set_xlabel("training digits N")
    ax.set_ylabel("memorised fraction (d1/d2 < 1/3)")
    ax.set_title("Memorisation versus training-set size")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def figure_loss(res: dict, path: Path) -> None:
    fig, ax = figure(figsize=(5.5, 3.6))
    for k, r in enumerate(res["models"]):
        h = np.asarray(r["loss_history"])
        if h.size:
            ax.plot(h[:, 0], h[:, 1], color=_color(r["spec"], k), label=r["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (noise prediction)")
    ax.set_title("Training loss (same budget)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _sample_grids(res: dict, out: Path) -> list[tuple[str, str]]:
    grids = [("real test digits", "samples_test.png")]
    write_image_grid(
        np.asarray(res["data"]["test_samples"]),
        (1, 8, 8),
        out / grids[0][1],
        value_range=(0.0, 16.0),
    )
    for r in res["models"]:
        name = "samples_" + r["spec"].replace("/", "_").replace(":", "") + ".png"
        write_image_grid(np.asarray(r["samples"]), (1, 8, 8), out / name, value_range=(0.0, 16.0))
        grids.append((f"{r['label']} (NFE {r['nfe'][-1]['nfe']})", name))
    return grids


def summary_lines(res: dict) -> list[str]:
    """The study's main table as text lines (for the terminal)."""
    nfes = [e["nfe"] for e in res["models"][0]["nfe"]] if res["models"] else []
    lines = [
        "sliced W2 to the test set (pixels) versus NFE; real digits: "
        f"{res['reference']['sliced_w2']:.3f} +- {res['reference']['sliced_w2_sd']:.3f}, "
        f"Gaussian fit: {res['gaussian_fit']['sliced_w2']:.3f}",
        f"{'model':<26}" + "".join(f"{n:>9}" for n in nfes),
    ]
    for r in res["models"]:
        lines.append(f"{r['label']:<26}" + "".join(f"{e['sliced_w2']:9.3f}" for e in r["nfe"]))
    lines.append("")
    sizes = [e["n_train"] for e in res["models"][0]["memorisation"]] if res["models"] else []
    lines.append(
        f"{'model':<26}{'t_S meas.':>10}{'t_S pred.':>10}"
        + "".join(f"{'mem N=' + str(n):>12}" for n in sizes)
    )
    for r in res["models"]:
        s = r["speciation"]
        lines.append(
            f"{r['label']:<26}{_fmt(s['t_measured']):>10}{_fmt(s['t_predicted']):>10}"
            + "".join(f"{e['fraction']:12.3f}" for e in r["memorisation"])
        )
    return lines


def write_digits_report(res: dict, out) -> None:
    """Write the figures and report.md of a digits-study results dict into ``out``."""
    out = Path(out)
    figure_quality(res, out / "quality_vs_nfe.png")
    figure_horizon(res, out / "quality_vs_horizon.png")
    figure_speciation(res, out / "speciation.png")
    figure_memorisation(res, out / "memorisation.png")
    figure_loss(res, out / "loss.png")
    grids = _sample_grids(res, out)
    cfg, ref, data = res["config"], res["reference"], res["data"]
    tr = cfg["train"]
    L = ["# Learned scores on 8x8 digits: what the non-reversible current changes", ""]
    L += [
        f"Data: scikit-learn digits, {data['n_train']} training and {data['n_test']} held-out "
        f"test images (d = {data['dim']}, pixels 0..16). Every model: the same MLP (width "
        f"{tr['hidden']}, {tr['depth']} residual blocks), {tr['steps']} AdamW steps of batch "
        f"{tr['batch_size']} (learning rate {tr['lr']:g}, {tr['lr_schedule']}), EMA "
        f"{tr['ema_decay']}, seed {cfg['seed']}, times {tr['t_min']:g}..{tr['t_max']:g} on a "
        f"{tr['spacing']} grid. Sampler: {cfg['method']} on a log-spaced grid with a final "
        f"Tweedie step. Classifier: {data['classifier']}, test accuracy "
        f"{data['classifier_test_accuracy']:.3f}.",
        "",
    ]
    L += ["## What the current changed, and what it did not", ""]
    L += [f"* {f}" for f in findings(res)]
    L += [
        "",
        "## The processes",
        "",
        "| model | slowest rate | Tr(U)/d | cond U | ‖Q‖ | ‖A‖ | training s | final loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["models"]:
        L.append(
            f"| {r['label']} | {r['rate']:.3g} | {r['bound']:.3g} | {r['u_condition']:.3g} | "
            f"{r['q_norm']:.3g} | {r['a_norm']:.3g} | {r['train_seconds']:.0f} | "
            f"{_fmt(r['final_loss'])} |"
        )
    L += [
        "",
        "## Sample quality versus score evaluations",
        "",
        f"Against the test set, {cfg['n_samples']} samples each. Real training digits "
        f"(same count, {ref['subsets']} subsets): digits FD {ref['frechet']:.3g} ± "
        f"{ref['frechet_sd']:.2g}, sliced W2 {ref['sliced_w2']:.3f} ± "
        f"{ref['sliced_w2_sd']:.3f}, MMD² {ref['mmd']:.2g} ± {ref['mmd_sd']:.1g}, class TV "
        f"{ref['class_tv']:.3f} ± {ref['class_tv_sd']:.3f}, classifier confidence "
        f"{ref['confidence']:.3f}. Samples of the Gaussian fit N(mean, C): sliced W2 "
        f"{res['gaussian_fit']['sliced_w2']:.3f}, MMD² {res['gaussian_fit']['mmd']:.2g}, class TV "
        f"{res['gaussian_fit']['class_tv']:.3f}, confidence "
        f"{res['gaussian_fit']['confidence']:.3f}.",
        "",
        "| model | NFE | digits FD | sliced W2 | MMD² | class TV | confidence |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["models"]:
        for e in r["nfe"]:
            L.append(
                f"| {r['label']} | {e['nfe']} | {e['frechet']:.3g} | {e['sliced_w2']:.3f} | "
                f"{e['mmd']:.2g} | {e['class_tv']:.3f} | {e['confidence']:.3f} |"
            )
    if all("exact_score_nfe" in r for r in res["models"]):
        L += [
            "",
            "Control: the same sampler with the exact score of the training set (it "
            "reproduces training digits when the sampler is accurate).",
            "",
            "| model | NFE | sliced W2 | class TV | confidence |",
            "|---|---|---|---|---|",
        ]
        for r in res["models"]:
            for e in r["exact_score_nfe"]:
                L.append(
                    f"| {r['label']} | {e['nfe']} | {e['sliced_w2']:.3f} | "
                    f"{e['class_tv']:.3f} | {e['confidence']:.3f} |"
                )
    L += [
        "",
        "![quality versus NFE](quality_vs_nfe.png)",
        "",
        "## Sample quality versus the horizon T",
        "",
        "The reverse process starts from N(0, U^-1) at T; KL is the closed-form distance of "
        "P_T to that law for the data's Gaussian moment match.",
        "",
        "| model | T | KL(P_T ‖ noise) | sliced W2 | MMD² | class TV |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["models"]:
        for e in r["horizon"]:
            L.append(
                f"| {r['label']} | {e['T']:g} | {e['kl_gaussian']:.2g} | {e['sliced_w2']:.3f} | "
                f"{e['mmd']:.2g} | {e['class_tv']:.3f} |"
            )
    L += [
        "",
        "![quality versus horizon](quality_vs_horizon.png)",
        "",
        "## Speciation (cloning with the classifier)",
        "",
        "phi(t): probability that two copies of a reverse trajectory, split at t, end as the "
        "same digit; t_S where phi crosses the 10-class threshold "
        f"({res['models'][0]['speciation']['threshold']:.3f}); predicted t_S from the class "
        "means and the within-class covariance (THEORY.md section 3).",
        "",
        "| model | measured t_S | 95% interval | predicted t_S |",
        "|---|---|---|---|",
    ]
    for r in res["models"]:
        s = r["speciation"]
        L.append(
            f"| {r['label']} | {_fmt(s['t_measured'])} | {_fmt(s['t_measured_low'])} – "
            f"{_fmt(s['t_measured_high'])} | {_fmt(s['t_predicted'])} |"
        )
    L += [
        "",
        "![speciation](speciation.png)",
        "",
        "## Memorisation versus training-set size",
        "",
        "Each model retrained with the same budget on the first N training digits; fraction of "
        "samples whose nearest training digit is 3x closer than the second nearest.",
        "",
        "| model | N | memorised fraction | ± se | predicted t_C |",
        "|---|---|---|---|---|",
    ]
    for r in res["models"]:
        for e in r["memorisation"]:
            L.append(
                f"| {r['label']} | {e['n_train']} | {e['fraction']:.3f} | {e['fraction_se']:.3f} | "
                f"{_fmt(e['t_collapse_predicted'])} |"
            )
    L += ["", "![memorisation](memorisation.png)", "", "## Samples", ""]
    L += [f"{name}: ![{name}]({file})  " for name, file in grids]
    L += [
        "",
        "![training loss](loss.png)",
        "",
        f"Runtime {res['runtime_s']:.0f} s with {res['versions']['torch_threads']} torch "
        f"thread(s); nonrev {res['versions']['nonrev']}, torch {res['versions']['torch']}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(L))


def _series(rows, key="sliced_w2") -> str:
    return ", ".join(f"{e[key]:.3g}" for e in rows)


def _verdict(a: float, b: float, noise: float, lower_is_better: bool = True) -> str:
    """'better', 'worse' or 'indistinguishable' for ``a`` against ``b``."""
    if abs(a - b) <= noise:
        return "indistinguishable"
    return "better" if (a < b) == lower_is_better else "worse"


def findings(res: dict) -> list[str]:
    """Plain-language statements read off the numbers (what the current changed and
    what it did not), for report.md. Differences within twice the spread of the
    reference floor (sliced W2) or two standard errors (memorised fractions) are
    called indistinguishable."""
    rows = {r["spec"]: r for r in res["models"]}
    ref = res["reference"]
    noise = 2 * ref["sliced_w2_sd"]
    out = []
    rev, opt, std = rows.get("data/none"), rows.get("data/optimal"), rows.get("identity/none")
    nfes = ", ".join(str(e["nfe"]) for e in res["models"][0]["nfe"]) if res["models"] else ""
    if rev and opt:
        out.append(
            f"Relaxation: the optimal current raised the slowest rate of U = data from "
            f"{rev['rate']:.3g} to {opt['rate']:.3g} (the bound Tr(U)/d), at the price of "
            f"a stiff drift: ||Q|| = {opt['q_norm']:.3g} and ||A|| = {opt['a_norm']:.3g} "
            f"against {rev['a_norm']:.3g} without it (cond U = {rev['u_condition']:.3g})."
        )
        verdicts = [
            _verdict(a["sliced_w2"], b["sliced_w2"], noise) for a, b in zip(opt["nfe"], rev["nfe"])
        ]
        summary = verdicts[0] if len(set(verdicts)) == 1 else "mixed (" + ", ".join(verdicts) + ")"
        out.append(
            f"Quality versus NFE ({nfes}), sliced W2 to the test set: {_series(opt['nfe'])} "
            f"with the current, {_series(rev['nfe'])} without (real digits "
            f"{ref['sliced_w2']:.3g}, noise level {noise:.2g}): {summary} with the "
            f"current. Classifier confidence {_series(opt['nfe'], 'confidence')} against "
            f"{_series(rev['nfe'], 'confidence')} (real digits {ref['confidence']:.3g})."
        )
        co, cr = opt.get("exact_score_nfe"), rev.get("exact_score_nfe")
        if co and cr:
            sampler_ok = [
                e["nfe"]
                for e, f in zip(co, cr)
                if _verdict(e["sliced_w2"], f["sliced_w2"], noise) != "worse"
            ]
            sampler_bad = [
                e["nfe"]
                for e, f in zip(co, cr)
                if _verdict(e["sliced_w2"], f["sliced_w2"], noise) == "worse"
            ]
            learned_bad = [
                e["nfe"]
                for e, f in zip(opt["nfe"], rev["nfe"])
                if _verdict(e["sliced_w2"], f["sliced_w2"], noise) == "worse"
            ]
            text = (
                f"Control with the exact score of the training set, same sampler and NFE: "
                f"sliced W2 {_series(co)} with the current, {_series(cr)} without. "
            )
            if sampler_bad:
                text += (
                    f"At NFE {', '.join(map(str, sampler_bad))} the sampler itself loses more "
                    "with the stiff current. "
                )
            gap = [n for n in learned_bad if n in sampler_ok]
            if gap:
                text += (
                    f"At NFE {', '.join(map(str, gap))} it does not, yet the learned model "
                    "is worse: that gap is in the learned score (same training budget)."
                )
            out.append(text.strip())
        best_o = min(opt["horizon"], key=lambda e: e["sliced_w2"])
        best_r = min(rev["horizon"], key=lambda e: e["sliced_w2"])
        early = [
            e
            for e in zip(opt["horizon"], rev["horizon"])
            if _verdict(e[0]["sliced_w2"], e[1]["sliced_w2"], noise) == "better"
        ]
        last_o, last_r = opt["horizon"][-1], rev["horizon"][-1]
        out.append(
            f"Horizon: at T = {last_r['T']:g} the reversible process is still "
            f"{last_r['kl_gaussian']:.2g} nats (Gaussian moment match) from its noise law, the "
            f"current's {last_o['kl_gaussian']:.2g}. "
            + (
                f"Starting at T <= {max(e[0]['T'] for e in early):g} the current gave better "
                f"samples than Q = 0 started at the same T; "
                if early
                else "At no horizon did the current give better samples than Q = 0 started at the "
                "same T; "
            )
            + f"the best over T was {best_o['sliced_w2']:.3g} (T = {best_o['T']:g}) with the "
            f"current and {best_r['sliced_w2']:.3g} (T = {best_r['T']:g}) without."
        )
        so, sr = opt["speciation"], rev["speciation"]
        out.append(
            f"Speciation: measured t_S {so['t_measured']:.3g} with the current and "
            f"{sr['t_measured']:.3g} without (predicted {so['t_predicted']:.3g} and "
            f"{sr['t_predicted']:.3g}): the backward dynamics commits to a digit "
            + (
                "later (smaller t) "
                if so["t_measured"] < sr["t_measured"]
                else "earlier (larger t) "
            )
            + "with the current, as the class-mean criterion predicts"
            + (
                "."
                if (so["t_predicted"] < sr["t_predicted"]) == (so["t_measured"] < sr["t_measured"])
                else " (but the prediction points the other way)."
            )
        )
        worse_quality = (
            _verdict(opt["nfe"][-1]["sliced_w2"], rev["nfe"][-1]["sliced_w2"], noise) == "worse"
        )
        for mo, mr in zip(opt["memorisation"], rev["memorisation"]):
            se = float(np.hypot(mo["fraction_se"], mr["fraction_se"]))
            v = _verdict(mo["fraction"], mr["fraction"], 2 * se)
            text = (
                f"Memorisation with N = {mo['n_train']} training digits: "
                f"{mo['fraction']:.3f} with the current, {mr['fraction']:.3f} without ("
                + (
                    "indistinguishable"
                    if v == "indistinguishable"
                    else ("lower" if mo["fraction"] < mr["fraction"] else "higher")
                    + " with the current"
                )
                + f"; predicted t_C {mo['t_collapse_predicted']:.3g} and "
                f"{mr['t_collapse_predicted']:.3g})."
            )
            if v == "better" and worse_quality:
                text += (
                    " Its samples were also further from the data at full N, so the lower "
                    "fraction goes with a score that fits the training set less, not with "
                    "better generalisation."
                )
            out.append(text)
    if std and rev:
        v = [
            _verdict(a["sliced_w2"], b["sliced_w2"], noise) for a, b in zip(rev["nfe"], std["nfe"])
        ]
        out.append(
            f"Data-shaped noise alone (U = data, Q = 0) against the standard U = I: sliced W2 "
            f"{_series(rev['nfe'])} against {_series(std['nfe'])} at NFE {nfes} ("
            + (v[0] if len(set(v)) == 1 else "mixed: " + ", ".join(v))
            + ")."
        )
    if std and opt:
        v = [
            _verdict(a["sliced_w2"], b["sliced_w2"], noise) for a, b in zip(opt["nfe"], std["nfe"])
        ]
        out.append(
            f"U = data with the optimal current against the standard U = I (both relax at "
            f"rate 1): sliced W2 {_series(opt['nfe'])} against {_series(std['nfe'])} ("
            + (v[0] if len(set(v)) == 1 else "mixed: " + ", ".join(v))
            + ")."
        )
    return out


def write_sample_picture(path, x, data: dict) -> None:
    """A PNG of samples ``x`` (rows, source units) of a trained model whose data
    description is ``data``: an image grid for image data, a scatter plot for 2-D
    vectors. Written atomically."""
    path = Path(path)
    if data["shape"] is not None:
        from nonrev.outputs import atomic_file

        vr = data["value_range"]
        with atomic_file(path) as tmp:
            write_image_grid(x, data["shape"], tmp, value_range=None if vr is None else tuple(vr))
        return
    fig, ax = figure(figsize=(5, 5))
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
    ax.set_aspect("equal")
    ax.set_title(f"{len(x)} samples")
    save_figure(fig, path, dpi=100)

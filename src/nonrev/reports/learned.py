"""Figures and the written report of the digits study (learned scores), from its
results dict alone, so a report can be rebuilt from a saved results.json."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nonrev.data.datasets import write_image_grid  # noqa: E402

COLORS = {"identity/none": "tab:gray", "data/none": "tab:blue", "data/optimal": "tab:red"}


def _color(spec: str, k: int) -> str:
    return COLORS.get(spec, plt.cm.viridis(0.2 + 0.6 * (k % 4) / 3))


def _fmt(x, nd=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}g}"


def figure_quality(res: dict, path: Path) -> None:
    ref = res["reference"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, ax, name in zip(("sliced_w2", "mmd", "class_tv"), axes,
                             ("sliced W2 (pixels)", "MMD^2 (RBF)", "class-balance TV")):
        for k, r in enumerate(res["models"]):
            nfe = [e["nfe"] for e in r["nfe"]]
            ax.plot(nfe, [e[key] for e in r["nfe"]], "o-", color=_color(r["spec"], k), label=r["label"])
        ax.axhspan(ref[key] - 2 * ref[key + "_sd"], ref[key] + 2 * ref[key + "_sd"], color="k",
                   alpha=0.12, label="real training digits (+-2 sd)")
        ax.axhline(res["gaussian_fit"][key], color="k", ls="--", lw=1,
                   label="Gaussian fit N(mean, C)")
        ax.set_xscale("log")
        ax.set_xlabel("score evaluations per sample (NFE)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} to the test set")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_horizon(res: dict, path: Path) -> None:
    ref = res["reference"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, r in enumerate(res["models"]):
        T = [e["T"] for e in r["horizon"]]
        c = _color(r["spec"], k)
        ax1.plot(T, [e["sliced_w2"] for e in r["horizon"]], "o-", color=c, label=r["label"])
        ax2.semilogy(T, [max(e["kl_gaussian"], 1e-16) for e in r["horizon"]], "o-", color=c,
                     label=r["label"])
    ax1.axhspan(ref["sliced_w2"] - 2 * ref["sliced_w2_sd"], ref["sliced_w2"] + 2 * ref["sliced_w2_sd"],
                color="k", alpha=0.12, label="real training digits")
    nfe = res["models"][0]["horizon"][0]["nfe"] if res["models"] else 0
    ax1.set_xlabel("start time T of the reverse process")
    ax1.set_ylabel("sliced W2 to the test set (pixels)")
    ax1.set_title(f"Quality versus horizon (NFE {nfe})")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("T")
    ax2.set_ylabel("KL(P_T || N(0, U^-1)) (nats, Gaussian moment match)")
    ax2.set_title("Distance of P_T to the starting law")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_speciation(res: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, r in enumerate(res["models"]):
        s = r["speciation"]
        c = _color(r["spec"], k)
        t = np.asarray(s["branch_times"])
        ax.plot(t, s["phi"], "o-", color=c, label=f"{r['label']}: t_S = {_fmt(s['t_measured'])} "
                                                   f"(predicted {_fmt(s['t_predicted'])})")
        ax.fill_between(t, s["ci_low"], s["ci_high"], color=c, alpha=0.15)
        if math.isfinite(s["t_predicted"]) and s["t_predicted"] > 0:
            ax.axvline(s["t_predicted"], color=c, ls="--", lw=1)
    if res["models"]:
        ax.axhline(res["models"][0]["speciation"]["threshold"], color="gray", ls=":", lw=1,
                   label="threshold")
    ax.set_xscale("log")
    ax.set_xlabel("branch time t (intrinsic units)")
    ax.set_ylabel("phi(t) = P(both clones give the same digit)")
    ax.set_title("Speciation measured by cloning (dashed: predicted t_S)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_memorisation(res: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, r in enumerate(res["models"]):
        n = [e["n_train"] for e in r["memorisation"]]
        f = np.array([e["fraction"] for e in r["memorisation"]])
        se = np.array([e["fraction_se"] for e in r["memorisation"]])
        ax.errorbar(n, f, yerr=2 * se, fmt="o-", color=_color(r["spec"], k), capsize=3,
                    label=r["label"])
    ax.set_xscale("log")
    ax.set_xlabel("training digits N")
    ax.set_ylabel("memorised fraction (d1/d2 < 1/3)")
    ax.set_title("Memorisation versus training-set size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_loss(res: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for k, r in enumerate(res["models"]):
        h = np.asarray(r["loss_history"])
        if h.size:
            ax.plot(h[:, 0], h[:, 1], color=_color(r["spec"], k), label=r["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (noise prediction)")
    ax.set_title("Training loss (same budget)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sample_grids(res: dict, out: Path) -> list[tuple[str, str]]:
    grids = [("real test digits", "samples_test.png")]
    write_image_grid(np.asarray(res["data"]["test_samples"]), (1, 8, 8), out / grids[0][1],
                     value_range=(0.0, 16.0))
    for r in res["models"]:
        name = "samples_" + r["spec"].replace("/", "_").replace(":", "") + ".png"
        write_image_grid(np.asarray(r["samples"]), (1, 8, 8), out / name, value_range=(0.0, 16.0))
        grids.append((f"{r['label']} (NFE {r['nfe'][-1]['nfe']})", name))
    return grids


def summary_lines(res: dict) -> list[str]:
    """The study's main table as text lines (for the terminal)."""
    nfes = [e["nfe"] for e in res["models"][0]["nfe"]] if res["models"] else []
    lines = ["sliced W2 to the test set (pixels) versus NFE; real digits: "
             f"{res['reference']['sliced_w2']:.3f} +- {res['reference']['sliced_w2_sd']:.3f}, "
             f"Gaussian fit: {res['gaussian_fit']['sliced_w2']:.3f}",
             f"{'model':<26}" + "".join(f"{n:>9}" for n in nfes)]
    for r in res["models"]:
        lines.append(f"{r['label']:<26}" + "".join(f"{e['sliced_w2']:9.3f}" for e in r["nfe"]))
    lines.append("")
    sizes = [e["n_train"] for e in res["models"][0]["memorisation"]] if res["models"] else []
    lines.append(f"{'model':<26}{'t_S meas.':>10}{'t_S pred.':>10}"
                 + "".join(f"{'mem N=' + str(n):>12}" for n in sizes))
    for r in res["models"]:
        s = r["speciation"]
        lines.append(f"{r['label']:<26}{_fmt(s['t_measured']):>10}{_fmt(s['t_predicted']):>10}"
                     + "".join(f"{e['fraction']:12.3f}" for e in r["memorisation"]))
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
    L += [f"Data: scikit-learn digits, {data['n_train']} training and {data['n_test']} held-out "
          f"test images (d = {data['dim']}, pixels 0..16). Every model: the same MLP (width "
          f"{tr['hidden']}, {tr['depth']} residual blocks), {tr['steps']} AdamW steps of batch "
          f"{tr['batch_size']} (learning rate {tr['lr']:g}, {tr['lr_schedule']}), EMA "
          f"{tr['ema_decay']}, seed {cfg['seed']}, times {tr['t_min']:g}..{tr['t_max']:g} on a "
          f"{tr['spacing']} grid. Sampler: {cfg['method']} on a log-spaced grid with a final "
          f"Tweedie step. Classifier: {data['classifier']}, test accuracy "
          f"{data['classifier_test_accuracy']:.3f}.", ""]
    L += ["## What the current changed, and what it did not", ""]
    L += [f"* {f}" for f in res["findings"]]
    L += ["", "## The processes", "",
          "| model | slowest rate | Tr(U)/d | cond U | ‖Q‖ | ‖A‖ | training s | final loss |",
          "|---|---|---|---|---|---|---|---|"]
    for r in res["models"]:
        L.append(f"| {r['label']} | {r['rate']:.3g} | {r['bound']:.3g} | {r['u_condition']:.3g} | "
                 f"{r['q_norm']:.3g} | {r['a_norm']:.3g} | {r['train_seconds']:.0f} | "
                 f"{_fmt(r['final_loss'])} |")
    L += ["", "## Sample quality versus score evaluations", "",
          f"Against the test set, {cfg['n_samples']} samples each. Real training digits "
          f"(same count, {ref['subsets']} subsets): sliced W2 {ref['sliced_w2']:.3f} ± "
          f"{ref['sliced_w2_sd']:.3f}, MMD² {ref['mmd']:.2g} ± {ref['mmd_sd']:.1g}, class TV "
          f"{ref['class_tv']:.3f} ± {ref['class_tv_sd']:.3f}, classifier confidence "
          f"{ref['confidence']:.3f}. Samples of the Gaussian fit N(mean, C): sliced W2 "
          f"{res['gaussian_fit']['sliced_w2']:.3f}, MMD² {res['gaussian_fit']['mmd']:.2g}, class TV "
          f"{res['gaussian_fit']['class_tv']:.3f}, confidence "
          f"{res['gaussian_fit']['confidence']:.3f}.", "",
          "| model | NFE | sliced W2 | MMD² | class TV | confidence |", "|---|---|---|---|---|---|"]
    for r in res["models"]:
        for e in r["nfe"]:
            L.append(f"| {r['label']} | {e['nfe']} | {e['sliced_w2']:.3f} | {e['mmd']:.2g} | "
                     f"{e['class_tv']:.3f} | {e['confidence']:.3f} |")
    if all("exact_score_nfe" in r for r in res["models"]):
        L += ["", "Control: the same sampler with the exact score of the training set (it "
              "reproduces training digits when the sampler is accurate).", "",
              "| model | NFE | sliced W2 | class TV | confidence |", "|---|---|---|---|---|"]
        for r in res["models"]:
            for e in r["exact_score_nfe"]:
                L.append(f"| {r['label']} | {e['nfe']} | {e['sliced_w2']:.3f} | "
                         f"{e['class_tv']:.3f} | {e['confidence']:.3f} |")
    L += ["", "![quality versus NFE](quality_vs_nfe.png)", "",
          "## Sample quality versus the horizon T", "",
          "The reverse process starts from N(0, U^-1) at T; KL is the closed-form distance of "
          "P_T to that law for the data's Gaussian moment match.", "",
          "| model | T | KL(P_T ‖ noise) | sliced W2 | MMD² | class TV |", "|---|---|---|---|---|---|"]
    for r in res["models"]:
        for e in r["horizon"]:
            L.append(f"| {r['label']} | {e['T']:g} | {e['kl_gaussian']:.2g} | {e['sliced_w2']:.3f} | "
                     f"{e['mmd']:.2g} | {e['class_tv']:.3f} |")
    L += ["", "![quality versus horizon](quality_vs_horizon.png)", "",
          "## Speciation (cloning with the classifier)", "",
          "phi(t): probability that two copies of a reverse trajectory, split at t, end as the "
          "same digit; t_S where phi crosses the 10-class threshold "
          f"({res['models'][0]['speciation']['threshold']:.3f}); predicted t_S from the class "
          "means and the within-class covariance (THEORY.md section 3).", "",
          "| model | measured t_S | 95% interval | predicted t_S |", "|---|---|---|---|"]
    for r in res["models"]:
        s = r["speciation"]
        L.append(f"| {r['label']} | {_fmt(s['t_measured'])} | {_fmt(s['t_measured_low'])} – "
                 f"{_fmt(s['t_measured_high'])} | {_fmt(s['t_predicted'])} |")
    L += ["", "![speciation](speciation.png)", "",
          "## Memorisation versus training-set size", "",
          "Each model retrained with the same budget on the first N training digits; fraction of "
          "samples whose nearest training digit is 3x closer than the second nearest.", "",
          "| model | N | memorised fraction | ± se | predicted t_C |", "|---|---|---|---|---|"]
    for r in res["models"]:
        for e in r["memorisation"]:
            L.append(f"| {r['label']} | {e['n_train']} | {e['fraction']:.3f} | {e['fraction_se']:.3f} | "
                     f"{_fmt(e['t_collapse_predicted'])} |")
    L += ["", "![memorisation](memorisation.png)", "", "## Samples", ""]
    L += [f"{name}: ![{name}]({file})  " for name, file in grids]
    L += ["", "![training loss](loss.png)", "",
          f"Runtime {res['runtime_s']:.0f} s with {res['versions']['torch_threads']} torch "
          f"thread(s); nonrev {res['versions']['nonrev']}, torch {res['versions']['torch']}.", ""]
    (out / "report.md").write_text("\n".join(L))

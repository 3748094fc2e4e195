"""``nonrev steer``: choose the current Q for a goal on the regimes of a data set
(:func:`nonrev.steer_q`) and save it, reusable by ``nonrev analyze --q``; or, with
``--objective sampling``, for a sampler's accuracy at a given NFE on the data's
Gaussian summary (:func:`nonrev.samplers.design_current`)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from nonrev.cli.common import (
    MAX_N_TRAIN,
    SEED,
    announce_cost,
    count,
    data_options,
    fail,
    format_time,
    user_errors,
)
from nonrev.process.spec import U_METAVAR
from nonrev.regimes.steering import OBJECTIVES
from nonrev.samplers import METHODS

#: Rows behind ``--prior`` with ``--objective sampling`` (the benchmarks' fair prior).
PRIOR_DRAWS = 200


def _print_table(
    info: dict, data: str, u_spec: str, n: int, d: int, classes: int, out: Path, reuse: str
) -> None:
    refs = info["references"]
    gamma = info["optimal_gamma"]
    opt_name = "optimal" if gamma == 1.0 else f"optimal x{gamma:.3g}"
    cols = [("none", refs["zero"]), (opt_name, refs["optimal"]), ("steered", info)]
    budget = "none" if info["q_norm_max"] is None else f"||Q||_2 <= {info['q_norm_max']:.4g}"
    rate = "none" if info["min_rate"] is None else f">= {info['min_rate']:.4g}"
    target = f" (target t_S = {info['target']:.4g})" if info["target"] is not None else ""
    click.echo(
        f"{'data':<16}{data}  (n = {n}, d = {d}, "
        f"{f'{classes} classes' if classes else 'no labels: total covariance'})"
    )
    click.echo(f"{'noise U':<16}{u_spec}")
    click.echo(f"{'objective':<16}{info['objective']}: {OBJECTIVES[info['objective']]}{target}")
    click.echo(
        f"{'constraints':<16}budget {budget}   rate {rate}   (bound Tr(U)/d {info['bound']:.4g})"
    )
    click.echo("")
    click.echo(f"{'':<16}" + "".join(f"{'Q = ' + name:>18}" for name, _ in cols))
    rows = [
        ("||Q||_2", [f"{c['q_norm']:.4g}" for _, c in cols]),
        ("rate", [f"{c['rate']:.4g}" for _, c in cols]),
        ("t_S speciation", [format_time(c["t_speciation"]) for _, c in cols]),
        ("t_C collapse", [format_time(c["t_collapse"]) for _, c in cols]),
        ("objective", [f"{c['value']:.4g}" for _, c in cols]),
    ]
    for key, vals in rows:
        click.echo(f"{key:<16}" + "".join(f"{v:>18}" for v in vals))
    iters = sum(s["iterations"] for s in info["starts"])
    click.echo(
        f"\nsearch: best start {info['start']}, {len(info['starts'])} starts, {iters} "
        f"iterations, {info['kernel_evaluations']} kernel evaluations, "
        f"{info['runtime_s']:.1f} s"
    )
    if u_spec == "identity":
        click.echo(
            "note: with U = identity no current moves t_S or t_C (docs/THEORY.md, "
            "section 1); use --u data or --u FILE"
        )
    click.echo(f"saved Q ({d} x {d}) to {out}; reuse: {reuse}")


def _print_sampling(
    info: dict, data: str, u_spec: str, n: int, d: int, out: Path, reuse: str
) -> None:
    click.echo(f"{'data':<16}{data}  (n = {n}, d = {d}; its normalised mean and covariance)")
    click.echo(f"{'noise U':<16}{u_spec}")
    click.echo(
        f"{'objective':<16}sampling: exact W2 of {info['method']} at NFE {info['nfe']} "
        f"({info['steps']} steps), started from N(0, U^-1)"
        f"{', with the data prior' if info['prior'] else ''}"
    )
    click.echo(f"{'constraints':<16}budget ||Q||_2 <= {info['q_norm_max']:.4g}")
    click.echo("")
    click.echo(f"{'':<16}{'Q = none':>18}{'Q = designed':>18}")
    rows = [
        ("||Q||_2", "0", f"{info['q_norm']:.4g}"),
        ("rate", f"{info['rate_reversible']:.4g}", f"{info['rate']:.4g}"),
        ("T", f"{info['T_reversible']:.4g}", f"{info['T']:.4g}"),
        ("exact W2", f"{info['w2_reversible']:.4g}", f"{info['w2']:.4g}"),
    ]
    for key, a, b in rows:
        click.echo(f"{key:<16}{a:>18}{b:>18}")
    click.echo(
        f"\nsearch: best start {info['start']}, {info['evaluations']} exact errors in the "
        f"Q search, {info['runtime_s']:.1f} s; grids (increasing) in --json"
    )
    click.echo(f"saved Q ({d} x {d}) to {out}; reuse: {reuse}")


def _steer_sampling(X, data, u_spec, method, nfe, prior, q_norm_max, seed, maxiter, out, as_json):
    import json
    import shlex
    import time

    from nonrev.data.datasets import Normaliser
    from nonrev.linalg import sample_covariance
    from nonrev.outputs import save_npy
    from nonrev.process.spec import u_from_spec
    from nonrev.samplers import design_current

    with user_errors():
        Xn = Normaliser.fit(X).forward(X)
        U = u_from_spec(u_spec, Xn)
        mean, cov = Xn.mean(0), sample_covariance(Xn)
        if prior:  # 200 rows drawn with replacement: the summary itself is refused
            rows = Xn[np.random.default_rng(seed).integers(0, len(Xn), PRIOR_DRAWS)]
            prior = (rows.mean(0), sample_covariance(rows))
        t0 = time.perf_counter()
        res = design_current(
            U,
            mean,
            cov,
            method,
            nfe,
            q_norm_max=q_norm_max,
            prior=prior or None,
            seed=seed,
            maxiter=maxiter,
        )
        runtime = time.perf_counter() - t0
    try:
        save_npy(out, res["Q"])
    except OSError as exc:
        raise fail(f"--out {out}: cannot write ({exc})") from None
    from nonrev.process.ou import OUProcess

    info = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in res.items()}
    info.update(
        objective="sampling",
        prior=bool(prior),
        runtime_s=runtime,
        rate_reversible=OUProcess(U).relaxation_rate(),
        u=u_spec,
        out=str(out),
    )
    reuse = shlex.join(["nonrev", "train", data, "--u", u_spec, "--q", str(out)])
    info["reuse"] = reuse
    n, d = X.shape
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_sampling(info, data, u_spec, n, d, out, reuse)


@click.command()
@data_options
@click.option(
    "--objective",
    type=click.Choice(list(OBJECTIVES) + ["sampling"]),
    required=True,
    help="speciation_early: maximise t_S (commit to a class sooner in the "
    "backward run); speciation_late: minimise t_S; window: maximise "
    "t_S - t_C; target_speciation: reach --target; rate: maximise the "
    "relaxation rate (the least stiff fast current for a budget); "
    "sampling: minimise the exact W2 of --method at --nfe model "
    "evaluations for the data's Gaussian summary, choosing Q, the horizon "
    "T and the grid (nonrev.samplers.design_current).",
)
@click.option(
    "--nfe",
    type=count(1, 10_000),
    default=None,
    help="Model evaluations of the sampler (with --objective sampling) [default: 10].",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default=None,
    help="Sampler (with --objective sampling) [default: dpmpp_2m].",
)
@click.option(
    "--prior",
    is_flag=True,
    help="With --objective sampling: the sampler integrates a Gaussian prior (gddim, "
    "dpmpp_2m), the mean and covariance of 200 data rows drawn with replacement "
    "(--seed); the data's own summary as prior would make every setting exact.",
)
@click.option(
    "--maxiter",
    type=count(1, 100_000),
    default=None,
    help="With --objective sampling: exact errors per restart of the Q search [default: 150].",
)
@click.option(
    "--target",
    type=float,
    default=None,
    metavar="T",
    help="The wanted t_S (with --objective target_speciation).",
)
@click.option(
    "--q-norm-max",
    type=float,
    default=None,
    metavar="X",
    help="Stiffness budget ||Q||_2 <= X [default: the norm of the optimal current; "
    "with --objective sampling 4 ||U||_2].",
)
@click.option(
    "--min-rate",
    type=float,
    default=None,
    metavar="R",
    help="Require the relaxation rate min Re spec((I+Q)U) >= R (below Tr(U)/d).",
)
@click.option(
    "--u",
    "u_spec",
    default="data",
    show_default=True,
    metavar=U_METAVAR,
    help="Noise precision U, as in nonrev analyze. With the identity no current moves anything.",
)
@click.option(
    "--n-train",
    type=count(2, MAX_N_TRAIN),
    default=None,
    help="Number of training points N in the collapse criterion [default: n].",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the random starts of the search.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    metavar="Q.npy",
    help="Where to save Q (.npy); written atomically.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def steer(
    data,
    key,
    labels_path,
    labels_key,
    objective,
    nfe,
    method,
    prior,
    maxiter,
    target,
    q_norm_max,
    min_rate,
    u_spec,
    n_train,
    seed,
    out_path,
    as_json,
):
    """Choose the current Q for a goal on the regimes of DATA and save it.

    DATA is an (n, d) array (.npy, .npz or .csv, as for nonrev analyze). The search
    maximises or minimises the predicted speciation time t_S (or t_S - t_C) over
    antisymmetric Q within the constraints, by gradients through the criteria of
    docs/THEORY.md (nonrev.steer_q), from Q = 0, the optimal current and random
    starts. Prints the predicted times before (Q = 0, the optimal current) and after
    (the steered Q), and saves Q for nonrev analyze --q.

    --objective sampling instead designs Q for a sampler: the normalised data's mean
    and covariance (as nonrev train normalises them) stand for the data, and Q, T and
    the grid minimise the exact W2 of --method at --nfe evaluations, started from
    N(0, U^-1), against the best reversible setting found with the same budget.
    """
    import json
    import shlex

    from nonrev.data.files import load_array, load_labels
    from nonrev.linalg import sample_covariance
    from nonrev.outputs import check_output, save_npy
    from nonrev.process.currents import optimal_q
    from nonrev.process.spec import u_from_spec
    from nonrev.regimes.steering import steer_q
    from nonrev.regimes.theory import class_covariances

    with user_errors():
        out = check_output(out_path, suffixes=(".npy",), parents=False)  # before any work
        sampling_only = {
            "--nfe": nfe is not None,
            "--method": method is not None,
            "--prior": prior,
            "--maxiter": maxiter is not None,
        }
        if objective != "sampling":
            for opt, given in sampling_only.items():
                if given:
                    raise ValueError(f"{opt} applies to --objective sampling only")
        else:
            for opt, given in (
                ("--labels", labels_path is not None),
                ("--target", target is not None),
                ("--min-rate", min_rate is not None),
                ("--n-train", n_train is not None),
            ):
                if given:
                    raise ValueError(f"{opt} does not apply to --objective sampling")
        X = load_array(data, key)
        announce_cost(X, data)
    if objective == "sampling":
        return _steer_sampling(
            X,
            data,
            u_spec,
            method or "dpmpp_2m",
            10 if nfe is None else nfe,
            prior,
            q_norm_max,
            seed,
            150 if maxiter is None else maxiter,
            out,
            as_json,
        )
    with user_errors():
        n, d = X.shape
        classes = 0
        within = None
        if labels_path is not None:
            between, within, w = class_covariances(X, load_labels(labels_path, n, labels_key))
            classes = int(w.size)
            if classes < 2:
                raise ValueError(f"labels must name at least 2 classes, got {classes}")
        else:
            between = sample_covariance(X)
        U = u_from_spec(u_spec, X)
        budget = q_norm_max if q_norm_max is not None else float(np.linalg.norm(optimal_q(U), 2))
        Q, info = steer_q(
            U,
            between,
            within,
            objective=objective,
            target=target,
            q_norm_max=budget,
            min_rate=min_rate,
            data_cov=sample_covariance(X),
            n_train=n if n_train is None else n_train,
            generator=seed,
        )
    try:
        save_npy(out, Q)
    except OSError as exc:
        raise fail(f"--out {out}: cannot write ({exc})") from None
    reuse = ["nonrev", "analyze", data, "--u", u_spec, "--q", str(out)]
    if key is not None:
        reuse += ["--key", key]
    if labels_path is not None:
        reuse += ["--labels", labels_path] + (["--labels-key", labels_key] if labels_key else [])
    if n_train is not None:
        reuse += ["--n-train", str(n_train)]
    reuse = shlex.join(reuse)
    if as_json:
        click.echo(json.dumps({**info, "u": u_spec, "out": str(out), "reuse": reuse}, indent=2))
    else:
        _print_table(info, data, u_spec, n, d, classes, out, reuse)

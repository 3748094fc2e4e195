"""Run nonrev's benchmarks: ``python -m benchmarks run --quick|--full [--only a,b]``.

Quick: every benchmark but those in ``FULL_ONLY`` at small sizes (the measured time is
in the README's notes on performance), all results in ``benchmarks/results/quick.json``. Full: one
``benchmarks/results/<name>.json``
per benchmark. A markdown table of the figures of merit is printed at the end. The
figures are ratios measured within one run; where a goal is missed, the JSON says so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

NAMES = (
    "kernel",
    "empirical_score",
    "samplers",
    "horizon",
    "reference",
    "lambdas",
    "finite_size",
    "steering",
    "threads",
    "image_scale",
)
#: Left out of ``--quick`` unless named in ``--only``: they build minutes of tables
#: (image_scale: the scheduler's add_noise tables at 3x32x32, 1-5 min on 2 cores).
FULL_ONLY = ("image_scale",)
RESULTS = Path(__file__).resolve().parent / "results"


def _atomic_write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, default=float)
    os.replace(tmp, path)


def headline_rows(name: str, res: dict) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows for the summary table."""

    def f(x, nd=2):
        return "n/a" if x is None else f"{x:.{nd}f}"

    rows = []
    if name == "kernel":
        for c in res["cases"]:
            rows.append(
                (
                    name,
                    f"d={c['d']}: speedup vs expm / full naive / Van Loan",
                    f"{f(c['speedup_vs_expm'], 1)} / {f(c['speedup_vs_full'], 1)} / "
                    f"{f(c['speedup_vs_vanloan'], 1)}",
                )
            )
        rows.append((name, "per-point time scaling exponent in d", f(res["scaling_exponent"])))
    elif name == "empirical_score":
        rows.append((name, "gemm_ratio (goal >= 0.6)", f(res["gemm_ratio"])))
        rows.append((name, "naive_speedup (goal >= 5)", f(res["naive_speedup"], 1)))
    elif name == "samplers":
        for m, v in res["methods"].items():
            rows.append(
                (name, f"steps to sliced W2 within 10% of converged: {m}", str(v["steps_needed"]))
            )
        rows.append(
            (name, "exact / Euler-Maruyama steps (goal <= 0.25)", f(res["exact_over_euler_steps"]))
        )
        if "best_deterministic_steps" in res:
            rows.append(
                (
                    name,
                    "mixture: best deterministic steps to converged (goal <= 50)",
                    str(res["best_deterministic_steps"]),
                )
            )
        if "coefficient_cost" in res:
            c = res["coefficient_cost"]
            rows.append(
                (
                    name,
                    f"coefficients, stiff current (d={c['d']}, ||A||="
                    f"{c['norm_A']:.0f}): gddim / dpmpp_2m time over ddim",
                    f"{f(c['over_ddim']['gddim'], 1)} / {f(c['over_ddim']['dpmpp_2m'], 1)}",
                )
            )
            rows.append(
                (
                    name,
                    "R_t Magnus checkpoints / fixed-step substeps",
                    f"{c['magnus_checkpoints']} / {c['fixed_step_substeps']}",
                )
            )
        if "dpmpp_2m_with_prior" in res:
            for label, v in (
                ("dpmpp_2m", res["few_steps"]["dpmpp_2m"]),
                ("dpmpp_2m + prior", res["dpmpp_2m_with_prior"]),
            ):
                rows.append(
                    (
                        name,
                        f"mixture: {label}, sliced W2 at "
                        + " / ".join(str(k) for k in v["steps"])
                        + " steps",
                        " / ".join(f(x, 3) for x in v["sliced_w2"]),
                    )
                )
        for key, v in res.get("prior", {}).get("table", {}).items():
            if key.startswith(("none", "sample n=200")):
                rows.append(
                    (
                        name,
                        f"Gaussian d=4, dpmpp_2m, prior {key}: W2 without / with current (ratio)",
                        f"{v['no_current']:.3g} / {v['optimal_q']:.3g} ({v['ratio']:.2f})",
                    )
                )
        for check, ok in res.get("gaussian", {}).get("checks", {}).items():
            rows.append((name, f"Gaussian d=4: {check}", str(ok)))
    elif name == "horizon":
        rows.append(
            (
                name,
                f"KL horizon speedup (bound {res['bound']:.2f}, goal >= 0.8 bound)",
                f(res["speedup"]),
            )
        )
        rows.append((name, "sample-level horizon speedup", f(res["sample_level"]["speedup"])))
    elif name == "reference":
        rows.append(
            (name, "phi intervals overlap with the plain loop", str(res["intervals_overlap"]))
        )
        rows.append((name, "speed ratio plain loop / nonrev", f(res["speed_ratio"], 1)))
    elif name == "finite_size":
        for r in res["rows"]:
            rows.append(
                (name, f"collapse gap at d={r['d']}, N={r['n_train']}", f"{100 * r['gap']:+.1f}%")
            )
    elif name == "steering":
        for r in res.get("cases", []):
            rows.append((name, f"steer_q d={r['d']}: seconds", f"{r['wall_s']:.1f}"))
    elif name == "threads":
        e = res["example"]
        rows.append(
            (
                name,
                "README worked example: default pools / one thread, wall time (goal <= 1.5)",
                f(e["ratio"]),
            )
        )
        for key, label in (
            ("piece_with_nonrev_limits", "with"),
            ("piece_without_nonrev_limits", "without"),
        ):
            if key in res:
                rows.append(
                    (
                        name,
                        f"sample() piece {label} nonrev's limits: default / one thread",
                        f(res[key]["ratio"], 1),
                    )
                )
    elif name == "image_scale":
        for c in res["cases"]:
            shape = "x".join(str(s) for s in c["shape"])
            rows.append(
                (
                    name,
                    f"{shape}: add_noise tables / dense tables (goal < 1%), MB "
                    f"(goal < 256), build seconds",
                    f"{100 * c['tables_over_dense']:.3f}%, {c['tables_mb']:.0f} MB, "
                    f"{c['tables_build_s']:.0f} s",
                )
            )
            rows.append(
                (
                    name,
                    f"{shape}: scheduler step / one UNet evaluation, batch "
                    f"{res['batch']}: " + " / ".join(c["methods"]) + " (goal <= 0.1)",
                    " / ".join(f(m["step_over_unet"], 3) for m in c["methods"].values()),
                )
            )
    elif name == "lambdas":
        for r in res["rows"]:
            rows.append(
                (
                    name,
                    f"d={r['d']} {r['lambdas']}: ||Q||, horizon speedup",
                    f"{r['q_norm']:.3g}, {r['horizon_speedup']:.2f}",
                )
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["run"])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (default)")
    size.add_argument("--full", action="store_true", help="full sizes")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: see README, notes on performance)",
    )
    parser.add_argument("--out", default=None, help="where to write (default benchmarks/results)")
    args = parser.parse_args(argv)
    quick = not args.full
    default = NAMES if not quick else tuple(n for n in NAMES if n not in FULL_ONLY)
    names = default if args.only is None else tuple(args.only.split(","))
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(
            f"--only: unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(NAMES)}"
        )
    import torch

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out) if args.out else RESULTS
    everything, table = {}, []
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        mod = importlib.import_module(f"benchmarks.{name}")
        res = mod.run(quick=quick, device=args.device)
        res["seconds"] = time.perf_counter() - t0
        everything[name] = res
        table += headline_rows(name, res)
        if not quick:
            _atomic_write(out_dir / f"{name}.json", res)
    if quick:
        _atomic_write(out_dir / "quick.json", everything)
    print("| benchmark | figure | value |\n|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    missed = [
        f"{n}.{k}"
        for n, r in everything.items()
        for k, ok in r.get("goals_met", {}).items()
        if not ok
    ]
    print(f"\ngoals missed: {', '.join(missed) if missed else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of a finished sweep, drawn from its results table."""

from __future__ import annotations

from pathlib import Path

from nonrev.reports.plotting import figure, save_figure


def regime_figures(table, out) -> list[Path]:
    """``t_S_vs_gamma.png`` and ``t_C_vs_gamma.png``: predicted (dashed, open
    markers) and measured (solid, filled) against gamma, one colour per class
    direction. Where other parameters vary too, the lines are means over them and the
    single cells are drawn as small dots."""
    ok = table[table["status"] == "ok"]
    if ok.empty:
        return []
    paths = []
    for name, title in (
        ("t_S", "speciation time t_S (cloning)"),
        (
            "t_C",
            "collapse time t_C (median lock time; the training\n"
            "points do not depend on the class direction)",
        ),
    ):
        fig, ax = figure(figsize=(6, 4))
        for k, (direction, rows) in enumerate(ok.groupby("direction", sort=False)):
            color = ("tab:blue", "tab:red", "tab:green")[k % 3]
            mean = rows.groupby("gamma")[[f"{name}_predicted", f"{name}_measured"]].mean()
            ax.plot(
                mean.index,
                mean[f"{name}_predicted"],
                "--o",
                mfc="white",
                color=color,
                label=f"{direction}: predicted",
            )
            ax.plot(
                mean.index,
                mean[f"{name}_measured"],
                "-o",
                color=color,
                label=f"{direction}: measured",
            )
            if len(rows) > len(mean):
                ax.plot(rows["gamma"], rows[f"{name}_measured"], ".", color=color, alpha=0.4)
        ax.set_xlabel("gamma  (Q = gamma * Q_optimal)")
        ax.set_ylabel(f"{name} (intrinsic time)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        path = Path(out) / f"{name}_vs_gamma.png"
        save_figure(fig, path, dpi=110)
        paths.append(path)
    return paths


def digits_grid_report(table, out) -> list[Path]:
    """The learned-model grid's figure and report.md (:mod:`nonrev.reports.digits_grid`)."""
    from nonrev.reports.digits_grid import write_digits_grid_report

    return write_digits_grid_report(table, out)


#: Figures (and reports) drawn from the table at the end of a sweep, by experiment name.
FIGURES = {"regime": regime_figures, "digits_cell": digits_grid_report}


def sweep_figures(experiment: str, table, out) -> list[Path]:
    """The figures of ``experiment`` (none for most) from its table, written into ``out``."""
    draw = FIGURES.get(experiment)
    return [] if draw is None else draw(table, out)

"""Cost of the gDDIM factor's Magnus integration under a strong current: an estimate
before it starts, a warning when it would run for minutes, a refusal when it could
not finish in memory or in hours, and progress while it runs.

The adaptive sixth-order Magnus integration of the rotation ``O_t`` (``R_t = L_t
O_t``, :meth:`nonrev.process.OUProcess.gddim_factor`) takes steps limited by how fast
the rotation rate ``Omega_t`` changes, and ``Omega_t`` is about as large as the
current: ``omega = max_t ||Omega_t||`` (:meth:`OUProcess.rotation_rate_bound`). Until
``Sigma_t`` settles (a few ``1 / rate``) the number of accepted steps grows about
linearly in ``omega`` times the span: measured on the README's d = 16 process with
``Q = s Q_opt``, s = 1, 10, 100, 1000, ``omega T`` = 20, 210, 2100, 21000 needed
101, 594, 4196, 30048 steps; :func:`estimated_steps` (``2 omega T + 60``) gives 101,
480, 4280, 42300. Each step keeps two (d, d) float64 checkpoints.
"""

from __future__ import annotations

import sys
import time
import types
import warnings

import numpy as np

#: Refuse an integration estimated to need more Magnus steps than this (hours of work).
MAX_STEPS = 10**6
#: Warn before an integration estimated to run longer than this many seconds.
WARN_SECONDS = 60.0
#: Show progress (on stderr) once an integration has run this many seconds.
PROGRESS_AFTER_S = 10.0
#: Work of one accepted step in Magnus step evaluations (one step, two half steps
#: and the rejected tries).
_EVALS_PER_STEP = 3.5


class StiffCurrentWarning(UserWarning):
    """The current makes the gDDIM factor's integration take minutes."""


#: Largest condition number of a frame's starting covariance (a Gaussian prior's
#: ``M C M^T + Sigma_t`` at the grid's smallest time): past it its Cholesky factor,
#: and every rotation rate built on it, is lost in float64 rounding.
MAX_FRAME_CONDITION = 1e12


def estimated_steps(process, t0: float, t_end: float, omega: float | None = None) -> int:
    """Accepted Magnus steps to integrate a frame's rotation from ``t0`` to ``t_end``:
    ``2 omega span + 60`` with ``span`` the part of ``[t0, t_end]`` before ``6 / rate``
    (after it the steps grow geometrically). ``omega``: the frame's largest rotation
    rate (:meth:`nonrev.process.ou.Frame.rate_bound`); default the gDDIM factor's
    (:meth:`OUProcess.rotation_rate_bound`)."""
    rate = max(process.relaxation_rate(), 1e-300)
    span = max(0.0, min(t_end, 6.0 / rate) - t0)
    if span == 0.0:
        return 60
    if omega is None:
        omega = process.rotation_rate_bound()
    return int(min(2.0 * omega * span + 60.0, 1e18))


def check_frame_start(S0, t0: float) -> None:
    """ValueError naming ``prior`` when a frame's starting covariance ``S0`` (not the
    gDDIM factor's zero) is not positive definite to :data:`MAX_FRAME_CONDITION`."""
    lam = np.sort(np.linalg.eigvalsh(0.5 * (S0 + np.swapaxes(S0, -1, -2))).ravel())
    if not np.all(np.isfinite(lam)) or lam[0] <= 0 or lam[-1] > MAX_FRAME_CONDITION * lam[0]:
        cond = lam[-1] / lam[0] if lam[0] > 0 else np.inf
        raise ValueError(
            f"prior: the prior's covariance C makes M C M^T + Sigma_t at t = {t0:.4g} "
            f"(the grid's smallest time) ill-conditioned (condition number {cond:.3g} > "
            f"{MAX_FRAME_CONDITION:g}) for float64; rescale C or use a larger t_min"
        )


def _describe(process) -> str:
    # Q from the blocks (Q = A U^{-1} - I block by block), so any kernel kind works
    Qb = process.drift_blocks @ np.linalg.inv(process.precision_blocks) - np.eye(
        process.drift_blocks.shape[-1]
    )
    q = float(np.linalg.norm(Qb, 2, axis=(-2, -1)).max())
    return (
        f"Q (||Q||_2 = {q:.3g}, rotation rate max ||Omega_t|| = "
        f"{process.rotation_rate_bound():.3g}, relaxation rate "
        f"{process.relaxation_rate():.3g})"
    )


class MagnusProgress:
    """Checked before a frame's Magnus integration (:class:`nonrev.process.ou.Frame`)
    starts (``rot``: the frame, with its checkpoints ``t``, ``O``, ``S`` and step ``h``;
    ``t_end``: where it must reach); :meth:`step` after each accepted or rejected step.

    Raises ValueError naming ``Q`` when the estimate exceeds :data:`MAX_STEPS` or the
    checkpoints would not fit in memory (``nonrev.config.check_memory``); warns
    (:class:`StiffCurrentWarning`, naming the current and the estimated steps and
    time) when it would run longer than :data:`WARN_SECONDS`; once running past
    :data:`PROGRESS_AFTER_S`, prints the time reached, the steps and the elapsed
    time to stderr about every 10 seconds.
    """

    def __init__(self, process, rot, t_end: float, *, stream=None):
        from nonrev.config import ConfigError, check_memory

        self.t_end = float(t_end)
        self.t_start = float(rot.t[-1])
        self.stream = stream
        self.count = 0
        self.start = time.perf_counter()
        self.next_report = self.start + PROGRESS_AFTER_S
        self.active = self.t_start <= self.t_end
        if not self.active:
            return
        entries = int(process.drift_blocks.size)  # d^2 dense, d g in blocks
        S0 = rot.S[0]
        if np.any(S0):  # a prior's frame
            check_frame_start(S0, float(rot.t[0]))
        n = estimated_steps(
            process, self.t_start, self.t_end, rot.rate_bound() if np.any(S0) else None
        )
        self.estimate = n
        if n > MAX_STEPS:
            what = (
                "Q / prior: the current with this prior's frame"
                if np.any(S0)
                else "Q: the current is too strong for the gDDIM factor (gddim, dpmpp_2m and "
                "the diffusers scheduler need it):"
            )
            raise ValueError(
                f"{what} {_describe(process)} needs about {n:.3g} Magnus steps up to t = "
                f"{self.t_end:.4g} (more than {MAX_STEPS:g}); scale Q down, or use method "
                "'ancestral' or 'ddim'"
            )
        try:
            check_memory(
                "Q",
                16.0 * entries * n,
                f"about {n} checkpoints of the gDDIM "
                f"factor's Magnus integration under {_describe(process)}",
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if n > 1000:  # time one step evaluation to turn the estimate into seconds
            seconds = n * _EVALS_PER_STEP * rot.step_seconds()
            if seconds > WARN_SECONDS:
                # a prior's frame turns at the prior's rate even without a current
                cause = (
                    f"the prior's frame under {_describe(process)} makes its Magnus integration"
                    if np.any(S0)
                    else f"the current {_describe(process)} makes the gDDIM factor's Magnus "
                    "integration"
                )
                fix = (
                    "a shorter horizon T, or no prior, avoids it"
                    if np.any(S0)
                    else "a weaker Q, or method 'ancestral' or 'ddim', avoids it"
                )
                warnings.warn(
                    f"{cause} take about {n} steps up to t = {self.t_end:.4g}, "
                    f"estimated {seconds / 60:.1f} minutes here; {fix}",
                    StiffCurrentWarning,
                    stacklevel=_caller_level(),
                )

    def step(self, rot) -> None:
        """Record one step; report when due."""
        self.count += 1
        now = time.perf_counter()
        if now < self.next_report:
            return
        self.next_report = now + 10.0
        t = float(rot.t[-1])
        frac = (t - self.t_start) / max(self.t_end - self.t_start, 1e-300)
        print(
            f"nonrev: gDDIM factor, Magnus integration at t = {t:.4g} of "
            f"{self.t_end:.4g} ({100 * min(frac, 1.0):.0f}% of the time span), "
            f"{len(rot.t)} checkpoints of about {self.estimate} estimated, "
            f"{now - self.start:.0f} s",
            file=self.stream or sys.stderr,
            flush=True,
        )


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside nonrev (the user's call)."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("nonrev"):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_too_stiff(process, t_max: float, option: str = "--q") -> bool:
    """Warn (:class:`StiffCurrentWarning`, naming ``option``) when the gDDIM factor up to
    ``t_max`` would need more than :data:`MAX_STEPS` Magnus steps: a model trained with
    this current can then be sampled by 'ancestral' or 'ddim' only (gddim, dpmpp_2m and
    the diffusers scheduler refuse it). Returns whether it warned."""
    n = estimated_steps(process, 0.0, float(t_max))
    if n <= MAX_STEPS:
        return False
    warnings.warn(
        f"{option}: the current {_describe(process)} needs about {n:.3g} Magnus steps for "
        f"the gDDIM factor up to t = {float(t_max):.4g} (more than {MAX_STEPS:g}): a model "
        "trained with it samples with 'ancestral' or 'ddim' only (gddim, dpmpp_2m and the "
        "diffusers scheduler refuse it); scale Q down to use them",
        StiffCurrentWarning,
        stacklevel=_caller_level(),
    )
    return True

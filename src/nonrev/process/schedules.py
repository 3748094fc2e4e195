"""Time schedules: maps from a user's clock ``tau`` to the intrinsic time ``t``.

A schedule ``beta(tau)`` (``dx = -beta A x dtau + sqrt(2 beta) dW``) is only a change
of clock, ``t(tau) = int_0^tau beta``. nonrev works in the intrinsic time ``t`` of
``dx = -A x dt + sqrt(2) dW`` everywhere; a schedule converts a grid in the user's
clock into intrinsic times (``schedule(tau)``) and back (``schedule.inverse(t)``).

For ``U = I`` the familiar forms are recovered: DDPM's linear-beta VP process
``dx = -beta_vp/2 x dtau + sqrt(beta_vp) dW`` is ``beta = beta_vp / 2``, and the
cosine schedule is ``t = -log(alpha_bar(tau)) / 2``.
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.linalg import as_positive_float


class Schedule:
    """Base class: subclasses define ``__call__`` (tau -> t), ``inverse`` and ``rate``."""

    #: Largest user time (the user's clock runs over [0, tau_max]).
    tau_max: float = 1.0

    def __call__(self, tau) -> np.ndarray:  # tau -> intrinsic time t
        raise NotImplementedError

    def _check(self, tau) -> np.ndarray:
        arr = np.asarray(tau, dtype=float)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > self.tau_max):
            raise ValueError(f"tau must lie in [0, {self.tau_max}], got {tau!r}")
        return arr

    def grid(self, steps: int, tau_min: float = 0.0) -> np.ndarray:
        """Intrinsic times of ``steps + 1`` points uniform in the user's clock."""
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        return self(np.linspace(tau_min, self.tau_max, int(steps) + 1))


class LinearVP(Schedule):
    """DDPM's linear schedule: ``beta_vp(tau) = beta_min + tau (beta_max - beta_min)``
    on ``tau`` in [0, 1], i.e. ``t(tau) = (beta_min tau + (beta_max - beta_min) tau^2 / 2) / 2``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = as_positive_float("beta_min", beta_min)
        self.beta_max = as_positive_float("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError("beta_max must be >= beta_min")

    def __call__(self, tau):
        tau = self._check(tau)
        return 0.5 * (self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2)

    def rate(self, tau):
        """``dt/dtau``."""
        tau = self._check(tau)
        return 0.5 * (self.beta_min + (self.beta_max - self.beta_min) * tau)

    def inverse(self, t):
        t = np.asarray(t, dtype=float)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        if a == 0:
            return t / b
        return (-b + np.sqrt(b * b + 4 * a * t)) / (2 * a)


class CosineVP(Schedule):
    """Nichol and Dhariwal's cosine schedule:
    ``alpha_bar(tau) = cos^2((tau + s)/(1 + s) pi/2) / cos^2(s/(1 + s) pi/2)`` and
    ``t = -log(alpha_bar) / 2``. ``tau_max`` < 1 keeps t finite (default 0.999).
    """

    def __init__(self, s: float = 0.008, tau_max: float = 0.999):
        self.s = as_positive_float("s", s)
        self.tau_max = as_positive_float("tau_max", tau_max)
        if self.tau_max >= 1:
            raise ValueError("tau_max must be < 1 (t is infinite at tau = 1)")
        self._c0 = math.cos(self.s / (1 + self.s) * math.pi / 2)

    def __call__(self, tau):
        tau = self._check(tau)
        c = np.cos((tau + self.s) / (1 + self.s) * np.pi / 2)
        return -np.log(c / self._c0)

    def rate(self, tau):
        tau = self._check(tau)
        u = (tau + self.s) / (1 + self.s) * np.pi / 2
        return np.tan(u) * np.pi / (2 * (1 + self.s))

    def inverse(self, t):
        t = np.asarray(t, dtype=float)
        u = np.arccos(self._c0 * np.exp(-t))
        return u * 2 * (1 + self.s) / np.pi - self.s

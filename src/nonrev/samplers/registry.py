"""The samplers' methods, by name: one record per method, declared once.

A method is a :class:`Method` record: its properties (stochastic, model evaluations
per step, native model output, multistep, prior support, explicit with a stability
guard), a ``build`` function that precomputes its per-step terms on a grid, and a
``step`` function that applies them. Every consumer (the :func:`~nonrev.samplers.sample`
driver, :func:`~nonrev.samplers.gaussian_error`, ``optimise_grid``, cloning in
:mod:`nonrev.regimes.measure`, the diffusers scheduler, training's ``sample``, the
CLI's choices) reads the properties here instead of comparing method names.

Adding a method is one file (see docs/ARCHITECTURE.md)::

    from nonrev.samplers import Method, register
    from nonrev.samplers.update import affine_step, finish, frame_terms

    register(Method("my_gddim", step=affine_step, summary="DDIM in the gDDIM frame",
                    build=lambda ker, options: finish(ker, **frame_terms(ker, ker.R))))

The coefficient types live here too: :class:`Coefficients` (what ``build`` returns,
completed by the front :func:`nonrev.samplers.coefficients`) with its typed parts
:class:`KernelTerms` and :class:`AffineTerms`, and the typed states that steps pass
along (:class:`Previous` for multistep methods).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from nonrev.operators import OperatorStack

OUTPUTS = ("x0", "score")


@dataclass(frozen=True)
class Method:
    """A sampler method and its properties.

    ``build(ker, options) -> dict`` returns the method's terms on the grid
    (:class:`~nonrev.samplers.gridkernel.GridKernel` ``ker``; ``options``: the keyword
    options of :func:`nonrev.samplers.coefficients`, e.g. ``prior``) as keyword
    arguments of :class:`Coefficients` (``x0``, ``score``, ``noise``);
    ``step(coef, k, x, out, kind, noise, state, affine) -> (x_new, state)`` applies
    step ``k`` to rows ``x`` given the model output ``out`` of kind ``"x0"`` or
    ``"score"``.

    * ``stochastic``: the step takes standard normal ``noise``;
    * ``evaluations``: model evaluations per step (stages; 2 for Heun);
    * ``output``: the model output the method prefers (``"x0"``, the data prediction,
      for exact-kernel methods; ``"score"`` for explicit ones); both are accepted;
    * ``multistep``: the step uses the previous step's model output (``state``);
    * ``prior``: accepts a Gaussian ``prior=(mean, cov)`` integrated exactly;
    * ``explicit``: an explicit scheme whose grid is checked for stability
      (:func:`nonrev.samplers.explicit.explicit_growth`); it cannot step to ``t = 0``;
    * ``positive_t_min``: the grid must end at ``t_min > 0``.
    """

    name: str
    build: Callable
    step: Callable
    stochastic: bool = False
    evaluations: int = 1
    output: str = "x0"
    multistep: bool = False
    prior: bool = False
    explicit: bool = False
    positive_t_min: bool = False
    summary: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Method name must be an identifier, got {self.name!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"Method output must be one of {OUTPUTS}, got {self.output!r}")
        if (
            isinstance(self.evaluations, bool)
            or not isinstance(self.evaluations, int)
            or self.evaluations < 1
        ):
            raise ValueError(
                f"Method evaluations must be an integer >= 1, got {self.evaluations!r}"
            )


#: Every registered method by name, in registration order.
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name is registered once)."""
    if not isinstance(method, Method):
        raise ValueError(f"register takes a Method, got {type(method).__name__}")
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method ``name`` (for tests that register their own)."""
    METHODS.pop(name, None)


def get_method(method) -> Method:
    """The :class:`Method` called ``method`` (or ``method`` itself if it is one);
    ValueError naming the known methods otherwise."""
    if isinstance(method, Method):
        return method
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}") from None


def method_names(**properties) -> tuple[str, ...]:
    """Names of the registered methods whose properties equal ``properties``, e.g.
    ``method_names(stochastic=True)`` or ``method_names(explicit=False)``."""
    fields = {f.name for f in dataclasses.fields(Method)}
    bad = set(properties) - fields
    if bad:
        raise ValueError(f"unknown method properties {sorted(bad)}; known: {sorted(fields)}")
    return tuple(
        name
        for name, m in METHODS.items()
        if all(getattr(m, k) == v for k, v in properties.items())
    )


# ---------------------------------------------------------------------------- coefficients
@dataclass(frozen=True)
class KernelTerms:
    """The process on the grid (sampling order, ``n + 1`` times): ``M_t`` and
    ``Sigma_t^{-1}`` (zero at ``t = 0``) as operator stacks, and the drift ``A``
    (a stack of one)."""

    M: OperatorStack
    Sinv: OperatorStack
    A: OperatorStack

    def to(self, dtype=None, device=None) -> "KernelTerms":
        return KernelTerms(*(a.to(dtype=dtype, device=device) for a in (self.M, self.Sinv, self.A)))


@dataclass(frozen=True)
class AffineTerms:
    """One affine update, per step ``k`` (operators act on rows):

        x_s = state x + model out (+ prev_model out_prev + prev_state x_prev) + const

    with ``out`` the model output of this form (data prediction or score) at ``x``
    and ``out_prev``, ``x_prev`` the previous step's (multistep methods); ``const``
    (n, d) a tensor or None."""

    state: OperatorStack
    model: OperatorStack
    prev_model: OperatorStack | None = None
    prev_state: OperatorStack | None = None
    const: torch.Tensor | None = None

    def to(self, dtype=None, device=None) -> "AffineTerms":
        def cast(a):
            return None if a is None else a.to(dtype=dtype, device=device)

        return AffineTerms(
            cast(self.state),
            cast(self.model),
            cast(self.prev_model),
            cast(self.prev_state),
            cast(self.const),
        )


@dataclass(frozen=True)
class Previous:
    """The multistep state: the previous step's model output ``out`` (of ``kind``)
    and, where the method needs it, the state ``x`` it was evaluated at."""

    kind: str
    out: torch.Tensor
    x: torch.Tensor | None = None


@dataclass(frozen=True)
class Coefficients:
    """Per-step terms of one method on one grid, in sampling order.

    ``times`` (n + 1,) decreasing numpy grid; step ``k`` goes ``times[k] ->
    times[k+1]``, ``h`` the step lengths. ``kernel``: the process on the grid
    (:class:`KernelTerms`). Exact-kernel methods carry their update in both forms,
    ``x0`` (model output: the data prediction) and ``score`` (model output: the
    score), each an :class:`AffineTerms` (``score`` is None with a prior);
    ``noise``: the operator applied to the step's standard normal noise
    (stochastic exact-kernel methods). ``prior``: the validated ``(mean, cov)``.
    """

    record: Method
    times: np.ndarray
    h: np.ndarray
    kernel: KernelTerms
    x0: AffineTerms | None = None
    score: AffineTerms | None = None
    noise: OperatorStack | None = None
    prior: tuple | None = None

    @property
    def method(self) -> str:
        return self.record.name

    @property
    def stochastic(self) -> bool:
        return self.record.stochastic

    @property
    def stages(self) -> int:
        return self.record.evaluations

    @property
    def steps(self) -> int:
        return int(self.h.size)

    def eval_time(self, k: int, stage: int = 0) -> float:
        """Time at which the model is evaluated in stage ``stage`` of step ``k``."""
        return float(self.times[k + stage])

    def terms(self, kind: str) -> AffineTerms:
        """The affine update for model outputs of ``kind`` (``"x0"`` or ``"score"``)."""
        terms = self.x0 if kind == "x0" else self.score
        if terms is None:
            if self.prior is not None:
                raise ValueError(
                    "prior: coefficients with a Gaussian prior take the data "
                    "prediction x0_hat, not score="
                )
            raise ValueError(f"{self.method} has no affine update for {kind} outputs")
        return terms

    def to(self, dtype=None, device=None) -> "Coefficients":
        """These coefficients with every tensor in ``dtype`` on ``device``."""

        def cast(a):
            return None if a is None else a.to(dtype=dtype, device=device)

        return dataclasses.replace(
            self,
            kernel=self.kernel.to(dtype, device),
            x0=cast(self.x0),
            score=cast(self.score),
            noise=cast(self.noise),
        )

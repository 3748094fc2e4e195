"""The affine update that the exact-kernel methods share, built once and applied once.

Every exact-kernel step is affine in the state and the model output:

    x_s = state x + model out (+ prev_model out_prev + prev_state x_prev) + const (+ C z)

(:class:`~nonrev.samplers.registry.AffineTerms`, one for data-prediction outputs and
one for score outputs). :func:`frame_terms` builds the one-step update in a frame
``F`` (a square root of ``Sigma_t``: the gDDIM factor, the Cholesky factor, ...),
:func:`finish` turns blocks into operator terms, :func:`affine_step` applies them,
and :func:`second_order_step` says which steps of a multistep method take their
second-order term.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.operators import apply_sum
from nonrev.samplers.gridkernel import GridKernel, T, right_solve
from nonrev.samplers.registry import AffineTerms, Previous


def second_order_step(n: int, k: int, desc, lower_order_final: bool) -> bool:
    """Whether step ``k`` of ``n`` takes the second-order correction: not the first,
    not one landing on ``t = 0``, and not the last of fewer than 15 steps with
    ``lower_order_final``."""
    last = k == n - 1
    return k > 0 and desc[k + 1] > 0 and not (last and lower_order_final and n < 15)


def frame_terms(ker: GridKernel, F: np.ndarray) -> dict:
    """The affine update with ``Phi = F_s F_t^{-1}`` for a square root ``F`` of
    ``Sigma`` on the grid (sampling order): the x0 and score forms as blocks
    ``{"X", "X0", "F", "G"}`` (numpy, see :func:`finish`)."""
    Ft, Fs = F[:-1], F[1:]
    Phi = right_solve(Fs, Ft)
    Mh_inv = np.linalg.inv(ker.Mh)
    return {
        "X": Phi,
        "X0": ker.M[1:] - Phi @ ker.M[:-1],
        "F": Mh_inv,
        "G": Mh_inv @ ker.S[:-1] - Fs @ T(Ft),
    }


def finish(
    ker: GridKernel,
    X,
    X0,
    F=None,
    G=None,
    *,
    X1=None,
    XP=None,
    F1=None,
    G1=None,
    const=None,
    noise=None,
) -> dict:
    """Blocks of an affine update as :class:`~nonrev.samplers.registry.Coefficients`
    keyword arguments (``x0``, ``score``, ``noise``), in the grid's dtype and device."""
    x0 = AffineTerms(ker.ops(X), ker.ops(X0), ker.ops(X1), ker.ops(XP), ker.vectors(const))
    score = None if F is None else AffineTerms(ker.ops(F), ker.ops(G), ker.ops(G1), ker.ops(F1))
    return {"x0": x0, "score": score, "noise": ker.ops(noise)}


def affine_step(
    coef,
    k: int,
    x: torch.Tensor,
    out: torch.Tensor,
    kind: str,
    noise=None,
    state: Previous | None = None,
    affine: bool = True,
):
    """Step ``k`` of an affine update: ``x_s = state x + model out`` (plus the previous
    step's terms when ``state`` holds them, the constant unless ``affine=False``, and
    ``noise`` through ``coef.noise``). Returns ``(x_s, Previous(kind, out, x))`` for
    multistep methods (``x`` only where the update uses it), else ``(x_s, None)``."""
    terms = coef.terms(kind)
    parts: list = [(terms.state, x), (terms.model, out)]
    if state is not None and k > 0 and terms.prev_model is not None:
        if state.kind != kind:
            raise ValueError(
                f"{coef.method}: use one kind of model output (x0_hat or score) for a whole run"
            )
        parts.append((terms.prev_model, state.out))
        if terms.prev_state is not None:
            parts.append((terms.prev_state, state.x))
    if coef.noise is not None:
        parts.append((coef.noise, noise))
    y = apply_sum(k, parts)  # one transform back for a structured kernel
    if terms.const is not None and affine:
        y = y + terms.const[k]
    if not coef.record.multistep:
        return y, None
    keep_x = terms.prev_state is not None
    return y, Previous(kind, out, x if keep_x else None)

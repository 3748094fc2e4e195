"""The process's kernel on a sampler's grid, as float64 blocks in sampling order.

:class:`GridKernel` is what every method's ``build`` receives: the exact kernel of
the process on the grid (``M_t``, ``Sigma_t``, Cholesky factors, the gap kernels,
``Sigma_t^{-1}``, and the gDDIM factor ``R_t`` on first access), as stacks of blocks
``(n + 1, m, g, g)`` in the process's basis (:mod:`nonrev.operators`; ``m = 1``,
``g = d`` for a dense kernel). All algebra on them broadcasts over the block axis;
:meth:`GridKernel.ops` turns a result into an operator stack.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def T(a: np.ndarray) -> np.ndarray:
    """The transpose of every block."""
    return np.swapaxes(a, -1, -2)


def right_solve(B: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``B A^{-1}`` for stacks (solve ``A^T Y^T = B^T``)."""
    return T(np.linalg.solve(T(A), T(B)))


def trace_sum(a: np.ndarray) -> np.ndarray:
    """The trace of a block-diagonal matrix from its blocks (..., m, g, g): (...)."""
    return np.trace(a, axis1=-2, axis2=-1).sum(axis=-1)


class GridKernel:
    """The kernel of ``process`` on the grid ``desc`` (decreasing, the sampling
    order) for ``n = desc.size - 1`` steps. Attributes (float64 blocks):

    * ``M``, ``S``, ``L``, ``Sinv`` (n + 1, m, g, g): ``M_t``, ``Sigma_t``, its
      Cholesky factor and inverse (zero at ``t = 0``) at ``desc[j]``;
    * ``Mh``, ``Sh`` (n, m, g, g): the kernel of the gap of step ``k`` (from
      ``desc[k+1]`` to ``desc[k]``): ``M_t = Mh[k] M_s``;
    * ``R`` (n + 1, m, g, g): the gDDIM factor (computed on first access);
    * ``A``, ``U``, ``Ui``: the drift, precision and stationary covariance blocks.
    """

    def __init__(self, process, grid: np.ndarray, *, dtype=torch.float64, device=None):
        self.process = process
        self.dtype, self.device = dtype, device
        self.desc = grid[::-1].copy()
        self.h = -np.diff(self.desc)
        self.n = self.desc.size - 1
        M, S, L, sM, sS = process.kernel_blocks(grid)
        # sampling order: index j <-> time desc[j] = grid[n - j]
        self.M, self.S, self.L = M[::-1], S[::-1], L[::-1]
        self.Mh, self.Sh = sM[::-1], sS[::-1]
        self.Sinv = np.zeros_like(self.S)
        for j in range(self.n + 1):
            if self.desc[j] > 0:
                Si = np.linalg.inv(self.S[j])
                self.Sinv[j] = 0.5 * (Si + T(Si))
        self.A = process.drift_blocks
        self.U = process.precision_blocks
        self.Ui = process.stationary_cov_blocks
        self._grid = grid

    @functools.cached_property
    def R(self) -> np.ndarray:
        return self.process.gddim_blocks(self._grid)[::-1]

    def ops(self, blocks: np.ndarray | None):
        """Blocks (n, m, g, g) as an operator stack in the grid's dtype and device."""
        if blocks is None:
            return None
        return self.process.operators(blocks, dtype=self.dtype, device=self.device)

    def vectors(self, vb: np.ndarray | None):
        """Block-coordinate vectors (n, m, g) as a tensor (n, d) of rows."""
        if vb is None:
            return None
        v = self.process.vector_from_blocks(vb)
        return torch.as_tensor(np.array(v), dtype=self.dtype, device=self.device)

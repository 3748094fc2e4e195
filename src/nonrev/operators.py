"""Linear operators on rows: how sampler coefficients act, whatever the kernel's structure.

A kernel hands its matrices to the samplers as *stacks of blocks* in its own basis:
float64 numpy arrays of shape ``(n, m, g, g)`` (``n`` times, ``m`` blocks of size
``g``), meaning ``P_k = V^T blockdiag(P_k[0], ..., P_k[m-1]) V`` with ``V`` an orthogonal
transform (:class:`Basis`). A dense kernel is the case ``m = 1``, ``g = d``, ``V = I``;
a kernel diagonal in groups of ``g`` DCT frequencies is ``m = d / g``.

The samplers do their float64 algebra on the blocks (products, solves and
factorisations all broadcast over the block axis) and apply the results through an
:class:`OperatorStack`, which acts on a batch of rows ``x`` (B, d) in the pixel basis:

* ``apply(k, x)`` is ``x P_k^T`` (the map applied to every row),
* ``apply_t(k, x)`` is ``x P_k``,
* ``dense(k)`` materialises ``P_k`` (for tests and small ``d``).

:class:`DenseStack` holds ``(n, d, d)`` tensors (``apply`` is ``x @ P_k.T``);
:class:`BlockStack` holds ``(n, m, g, g)`` tensors and a basis, and costs the basis
transform plus ``O(B d g)`` per application.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
import torch


class Basis:
    """An orthogonal change of basis of rows (B, d) to block coordinates (B, m, g).

    Subclasses implement :meth:`forward` and :meth:`inverse` (torch, any device and
    dtype) and :meth:`forward_np` / :meth:`inverse_np` (float64 numpy, leading axes
    free); ``m * g == d``."""

    dim: int
    blocks: tuple[int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, m, g)
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # (B, m, g) -> (B, d)
        raise NotImplementedError

    def forward_np(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse_np(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dense_np(self, blocks: np.ndarray) -> np.ndarray:
        """The dense ``V^T blockdiag(blocks) V`` of a stack ``(..., m, g, g)``:
        ``(..., d, d)`` float64 (columns are the images of the unit vectors)."""
        lead = blocks.shape[:-3]
        d = self.dim
        eye = np.eye(d)
        out = np.empty((*lead, d, d))
        for idx in np.ndindex(*lead):
            y = np.einsum("mij,bmj->bmi", blocks[idx], self.forward_np(eye))
            out[idx] = self.inverse_np(y).T  # rows of the result are P e_i: transpose
        return out


class IdentityBasis(Basis):
    """The basis of a dense kernel: one block of size ``d``."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.blocks = (1, self.dim)

    def forward(self, x):
        return x[:, None, :]

    def inverse(self, y):
        return y[:, 0, :]

    def forward_np(self, x):
        return x[..., None, :]

    def inverse_np(self, y):
        return y[..., 0, :]

    def dense_np(self, blocks):
        return np.array(blocks[..., 0, :, :])


class OperatorStack:
    """``n`` linear maps of R^d acting on rows; see the module docstring."""

    dim: int

    def __len__(self) -> int:
        raise NotImplementedError

    def apply(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``x P_k^T`` for rows ``x`` (B, d)."""
        raise NotImplementedError

    def apply_t(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``x P_k`` for rows ``x`` (B, d)."""
        raise NotImplementedError

    def dense(self, k: int | None = None) -> torch.Tensor:
        """``P_k`` as a (d, d) tensor, or every ``P_k`` (n, d, d) for ``k = None``."""
        raise NotImplementedError

    def apply_rows(self, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Row ``b`` of ``x`` (B, d) mapped by ``P_{idx[b]}`` (a different map per row,
        e.g. a per-sample time)."""
        raise NotImplementedError

    def apply_groups(self, x: torch.Tensor) -> torch.Tensor:
        """Groups of rows ``x`` (n, r, d), group ``k`` mapped by ``P_k`` (a stack of ``n``
        maps, e.g. :meth:`take` of the times drawn for a training batch): memory
        O(n d g + n r d), not a (n r, d, d) gather."""
        raise NotImplementedError

    def take(self, idx) -> "OperatorStack":
        """The maps at the indices ``idx`` (a 1-D index array or slice), as a stack."""
        raise NotImplementedError

    def to(self, dtype=None, device=None) -> "OperatorStack":
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Memory held by the stack's tensors."""
        raise NotImplementedError


class DenseStack(OperatorStack):
    """Dense maps: a tensor (n, d, d); ``apply(k, x) = x @ P[k].T``."""

    def __init__(self, P: torch.Tensor):
        self.P = P
        self.dim = int(P.shape[-1])

    def __len__(self):
        return int(self.P.shape[0])

    def apply(self, k, x):
        return x @ self.P[k].T

    def apply_t(self, k, x):
        return x @ self.P[k]

    def dense(self, k=None):
        return self.P if k is None else self.P[k]

    def apply_rows(self, idx, x):
        return torch.bmm(self.P[idx], x.unsqueeze(-1)).squeeze(-1)

    def apply_groups(self, x):
        return x @ self.P.transpose(-1, -2)

    def take(self, idx):
        return DenseStack(self.P[idx])

    def to(self, dtype=None, device=None):
        return DenseStack(self.P.to(dtype=dtype, device=device))

    @property
    def nbytes(self):
        return self.P.element_size() * self.P.nelement()


class BlockStack(OperatorStack):
    """Block-diagonal maps in a basis: ``blocks`` (n, m, g, g) and a :class:`Basis`;
    ``apply(k, x) = V^T (blocks[k] (V x))`` row by row."""

    def __init__(self, blocks: torch.Tensor, basis: Basis):
        self.blocks = blocks
        self.basis = basis
        self.dim = int(basis.dim)

    def __len__(self):
        return int(self.blocks.shape[0])

    def apply(self, k, x):
        y = self.basis.forward(x)
        return self.basis.inverse(torch.einsum("mij,bmj->bmi", self.blocks[k], y))

    def apply_t(self, k, x):
        y = self.basis.forward(x)
        return self.basis.inverse(torch.einsum("mji,bmj->bmi", self.blocks[k], y))

    def apply_rows(self, idx, x):
        y = self.basis.forward(x)
        return self.basis.inverse(torch.einsum("bmij,bmj->bmi", self.blocks[idx], y))

    def apply_groups(self, x):
        n, r, d = x.shape
        y = self.basis.forward(x.reshape(n * r, d)).reshape(n, r, *self.blocks.shape[1:3])
        z = torch.einsum("nmij,nrmj->nrmi", self.blocks, y)
        return self.basis.inverse(z.reshape(n * r, *z.shape[2:])).reshape(n, r, d)

    def dense(self, k=None):
        b = self.blocks.detach().cpu().double().numpy()
        b = b if k is None else b[k]
        out = self.basis.dense_np(b)
        return torch.as_tensor(out, dtype=self.blocks.dtype, device=self.blocks.device)

    def take(self, idx):
        return BlockStack(self.blocks[idx], self.basis)

    def to(self, dtype=None, device=None):
        return BlockStack(self.blocks.to(dtype=dtype, device=device), self.basis)

    @property
    def nbytes(self):
        return self.blocks.element_size() * self.blocks.nelement()


def stack(blocks: np.ndarray, basis: Basis, *, dtype=torch.float64, device=None) -> OperatorStack:
    """The operator stack of float64 blocks ``(n, m, g, g)`` in ``basis``, as tensors in
    ``dtype`` on ``device``: a :class:`DenseStack` for one block in the identity basis,
    else a :class:`BlockStack`."""
    t = torch.as_tensor(np.array(blocks), dtype=dtype, device=device)  # a fresh copy
    if isinstance(basis, IdentityBasis):
        return DenseStack(t[:, 0])
    return BlockStack(t, basis)


def apply_sum(k: int, terms) -> torch.Tensor:
    """``sum_i x_i P_i[k]^T`` for ``terms = [(stack_i, x_i), ...]`` (rows ``x_i``
    (B, d)). Block stacks in one basis are combined in block coordinates and
    transformed back once (one inverse transform instead of one per term, the bulk of
    a structured step's cost); dense stacks are summed in order."""
    first = terms[0][0]
    if isinstance(first, BlockStack) and all(
        isinstance(s, BlockStack) and s.basis is first.basis for s, _ in terms
    ):
        parts = [torch.einsum("mij,bmj->bmi", s.blocks[k], s.basis.forward(x)) for s, x in terms]
        return first.basis.inverse(functools.reduce(operator.add, parts))
    return functools.reduce(operator.add, [s.apply(k, x) for s, x in terms])

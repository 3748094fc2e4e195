"""nonrev in diffusers: a scheduler and a pipeline for non-reversible (matrix) kernels.

Needs ``pip install nonrev[diffusers]``; this is the only module of nonrev that
imports diffusers.

:class:`NonReversibleScheduler` is a diffusers ``SchedulerMixin`` + ``ConfigMixin``
for the forward process ``dx = -(I + Q) U x dt + sqrt(2) dW``
(:class:`nonrev.process.OUProcess`), whose kernel is ``x_t = M_t x_0 + R_t eps``
with matrices ``M_t = exp(-t A)`` and ``R_t`` the gDDIM square root of
``Sigma_t`` (:attr:`nonrev.process.Kernel.R`). Images ``(B, C, H, W)`` are flattened
to vectors of ``d = C H W`` on which ``U`` and ``Q`` act (row-major, as
``tensor.reshape(B, -1)``).

**Time.** Integer timestep ``k`` (``0 <= k < num_train_timesteps``) is intrinsic time
``t_k = -log(alphas_cumprod[k]) / 2``, with ``alphas_cumprod`` computed from the beta
schedule exactly as diffusers' DDPMScheduler does. For ``U = I``, ``Q = 0`` this gives
``M_t = sqrt(alphas_cumprod[k]) I`` and ``Sigma_t = (1 - alphas_cumprod[k]) I``: the
scheduler then reproduces DDPMScheduler (``method="ancestral"``) and DDIMScheduler
(``method="gddim"``, eta = 0) step for step. The reverse run ends at ``t = 0``
(``alphas_cumprod = 1``, diffusers' ``set_alpha_to_one``).

**Steps.** ``step`` turns the model output into what nonrev's step functions take
(:mod:`nonrev.samplers.steps`) and calls them; it does not re-implement an update.
``prediction_type="epsilon"`` (the network predicts the ``eps`` of ``add_noise``):
the score ``-R_t^{-T} eps``, which enters the step without ``M_t^{-1}`` (the
data prediction ``M_t^{-1}(x - R_t eps)`` would multiply by up to
``exp(t max Re spec A)``); ``"sample"`` (the network predicts ``x_0``): the data
prediction directly. Methods ``ancestral``, ``gddim``, ``dpmpp_2m`` and ``ddim``.

**Files.** ``U`` and ``Q`` (or a structured process's arrays) are not config entries:
``save_pretrained`` writes them (float64) to ``nonrev_process.safetensors`` beside
``scheduler_config.json`` and ``from_pretrained`` reads them back, bit for bit; no
pickle anywhere.

:class:`NonReversiblePipeline` draws the prior ``N(0, U^{-1})`` (which the scalar
``init_noise_sigma`` of the stock pipelines cannot express), runs the scheduler
with any ``UNet2DModel`` and returns images as DDPMPipeline does (data in [-1, 1],
output ``(x / 2 + 0.5)`` clipped to [0, 1]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from nonrev.config import ConfigError, check_memory
from nonrev.process.ou import OUProcess, has_block_interface
from nonrev.samplers import get_method, method_names
from nonrev.samplers.steps import coefficients
from nonrev.samplers.steps import step as nonrev_step
from nonrev.threads import single_threaded

__all__ = [
    "PROCESS_FILE",
    "NonReversiblePipeline",
    "NonReversibleScheduler",
    "NonReversibleSchedulerOutput",
]

#: File beside ``scheduler_config.json`` that holds ``U`` and ``Q`` (float64).
PROCESS_FILE = "nonrev_process.safetensors"
PREDICTION_TYPES = ("epsilon", "sample")
SPACINGS = ("leading", "linspace", "trailing")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
#: Key of ``scheduler_config.json`` that holds the sha256 of the process file's bytes
#: followed by the config file's bytes (with this value blanked to :data:`_BLANK`):
#: a change to either file, one bit anywhere, is refused by ``from_pretrained``.
CHECKSUM_KEY = "nonrev_sha256"
_BLANK = "0" * 64
#: Training timesteps whose tables (``M_t``, ``R_t``) are computed at once.
_TABLE_CHUNK_BYTES = 64 * 2**20


class SchedulerFileError(ValueError):
    """A saved scheduler folder that cannot be loaded (one line naming the file)."""


@dataclasses.dataclass
class NonReversibleSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next (lower) timestep, in the input's shape;
    ``pred_original_sample``: the data prediction ``x0_hat`` at the current one."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def _betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas):
    """The betas of diffusers' DDPMScheduler for the same arguments (float32)."""
    if trained_betas is not None:
        try:
            betas = torch.tensor(np.asarray(trained_betas, dtype=np.float64), dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"trained_betas must be a 1-D list of numbers in (0, 1), got "
                f"{_short(trained_betas)}"
            ) from None
        if betas.ndim != 1 or betas.numel() != num_train_timesteps:
            raise ValueError(
                f"trained_betas must be a 1-D list of num_train_timesteps = "
                f"{num_train_timesteps} numbers, got shape {tuple(betas.shape)}"
            )
        return betas
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return (
            torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32)
            ** 2
        )
    if beta_schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps)
    raise ValueError(
        f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {beta_schedule!r}"
    )


def _short(x) -> str:
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist = 60, 60, 6
    return r.repr(x)


def _floating(x: torch.Tensor, name: str) -> None:
    """The rule for dtypes: samples and model outputs must be floating point (integer
    images are refused rather than silently truncated; cast them, e.g. ``x.float() /
    127.5 - 1``)."""
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got {x.dtype}; cast it "
            "first (e.g. images: x.float() / 127.5 - 1)"
        )


def _inference_timesteps(n_train: int, n: int, spacing: str, offset: int) -> np.ndarray:
    """Decreasing integer timesteps, as DDPMScheduler.set_timesteps spaces them."""
    if spacing == "linspace":
        ts = np.linspace(0, n_train - 1, n).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = n_train // n
        ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + offset
    else:  # trailing
        ts = np.round(np.arange(n_train, 0, -n_train / n)).astype(np.int64) - 1
    return ts


class NonReversibleScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler for ``dx = -(I + Q) U x dt + sqrt(2) dW`` (see the module
    docstring for the conventions).

    Parameters
    ----------
    U : (d, d) array, symmetric positive definite (the prior is ``N(0, U^{-1})``);
        ``d`` is the flattened size of one sample (``C H W`` for images).
    Q : (d, d) array, antisymmetric, or None (``Q = 0``, reversible).
    process : instead of ``U`` and ``Q``, a process object: an
        :class:`~nonrev.process.OUProcess` or a structured
        :class:`~nonrev.process.SpectralProcess` (``U``, ``Q`` block-diagonal in a DCT
        basis), whose tables and steps then cost ``O(d g)`` memory per timestep and
        ``O(d log d)`` work per sample instead of ``O(d^2)``; saved with the scheduler.
    num_train_timesteps, beta_start, beta_end, beta_schedule (``linear``,
        ``scaled_linear``, ``squaredcos_cap_v2``), trained_betas : the noise schedule,
        as in DDPMScheduler; it fixes the intrinsic times ``t_k = -log(alphas_cumprod[k]) / 2``.
    prediction_type : ``epsilon`` (the network predicts the noise ``eps`` of
        :meth:`add_noise`) or ``sample`` (it predicts ``x_0``).
    method : ``ancestral`` (the exact Gaussian posterior step; = DDPM for ``U = I``),
        ``gddim`` (DDIM in the gDDIM frame; = DDIM with eta 0 for ``U = I``),
        ``dpmpp_2m`` (matrix DPM-Solver++(2M)) or ``ddim`` (Cholesky frame), the
        methods of :mod:`nonrev.samplers.steps`.
    timestep_spacing (``leading``, ``linspace``, ``trailing``), steps_offset : how
        :meth:`set_timesteps` picks the integer timesteps, as in DDPMScheduler.
        ``leading`` (the default, as in diffusers) starts below the last training
        timestep; ``trailing`` starts at it, the largest ``t``, where the prior
        ``N(0, U^{-1})`` is nearest the law of ``x_t`` (this matters for a ``U`` with
        a slow rate ``lambda_min(U)``).

    Invalid ``U``/``Q`` raise ValueError naming the field. Memory: :meth:`add_noise`
    keeps ``M_t`` and ``R_t`` at every training timestep (``2 N d^2`` float64 for a
    dense kernel, ``2 N d g`` for a spectral one, plus a copy in the samples' dtype), built on
    first use in chunks of the timesteps (the
    gDDIM factor costs a Magnus integration, longer with a strong current: a current
    too strong to integrate is refused naming ``Q``, one that takes minutes is
    warned about, see :mod:`nonrev.process.stiffness`); a ``num_train_timesteps``
    whose tables would not fit in memory is refused when the scheduler is made.
    Dtypes: samples and model outputs must be floating point; ``noise`` and the
    model output are cast to the sample's dtype, and the result has that dtype.
    """

    config_name = "scheduler_config.json"
    ignore_for_config = ["U", "Q", "process"]
    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        U=None,
        Q=None,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,
        prediction_type: str = "epsilon",
        method: str = "ancestral",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        process=None,
    ):
        if process is not None:
            if U is not None or Q is not None:
                raise ValueError("give either process= or U= (and Q=), not both")
            if not has_block_interface(process):
                raise ValueError(
                    f"process must be an OUProcess or a SpectralProcess, got "
                    f"{type(process).__name__}"
                )
            self.process = process
        else:
            if U is None:
                raise ValueError(
                    "U is required: the (d, d) precision of the prior "
                    "N(0, U^{-1}) (or give process=, e.g. a SpectralProcess)"
                )
            if torch.is_tensor(U):
                U = U.detach().cpu().double().numpy()
            if torch.is_tensor(Q):
                Q = Q.detach().cpu().double().numpy()
            self.process = OUProcess(U, Q)  # ValueError naming U or Q
        self.dim = self.process.dim
        #: the dense kernel's U and Q (None for a structured process: see ``process``)
        self.U, self.Q = getattr(self.process, "U", None), getattr(self.process, "Q", None)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {', '.join(PREDICTION_TYPES)} "
                f"('sample' = the network predicts x_0); got {prediction_type!r}"
            )
        record = get_method(method)  # ValueError naming the registered methods
        if record.explicit or record.positive_t_min:
            raise ValueError(
                f"method must be one that can step to t = 0 (an exact-kernel "
                f"method: {', '.join(method_names(explicit=False, positive_t_min=False))}); "
                f"got {method!r}"
            )
        if timestep_spacing not in SPACINGS:
            raise ValueError(
                f"timestep_spacing must be one of {', '.join(SPACINGS)}; got {timestep_spacing!r}"
            )
        if (
            isinstance(num_train_timesteps, bool)
            or int(num_train_timesteps) != num_train_timesteps
            or num_train_timesteps < 1
        ):
            raise ValueError(
                f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}"
            )
        d, entries = self.dim, int(self.process.drift_blocks.size)  # d^2 dense, d g in blocks
        try:  # the tables of add_noise: 2 N entries float64, a float32 copy, one chunk's work
            check_memory(
                "num_train_timesteps",
                24.0 * int(num_train_timesteps) * entries + 2 * _TABLE_CHUNK_BYTES,
                f"the forward tables M_t, R_t at d = {d}",
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self.betas = _betas(
            int(num_train_timesteps), beta_start, beta_end, beta_schedule, trained_betas
        )
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        ab = self.alphas_cumprod.double().numpy()
        if (
            self.betas.ndim != 1
            or not np.all(np.isfinite(ab))
            or np.any(ab <= 0)
            or np.any(ab >= 1)
            or np.any(np.diff(ab) >= 0)
        ):
            raise ValueError(
                "the beta schedule must give alphas_cumprod strictly decreasing "
                "in (0, 1) (betas in (0, 1))"
            )
        #: intrinsic time of each training timestep, float64 (N,)
        self.train_times = -0.5 * np.log(ab)
        self.init_noise_sigma = 1.0  # unused: the prior is N(0, U^{-1}), see sample_prior
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, int(num_train_timesteps))[::-1].copy())
        self._coef64 = None
        self._coef_cache = {}
        self._tables = None
        self._table_cache = {}
        self._state = None
        self._prev_k = None

    # ------------------------------------------------------------------ time map
    def intrinsic_time(self, timesteps) -> np.ndarray:
        """Intrinsic time ``t_k`` of integer timesteps (float64, same shape)."""
        return self.train_times[self._check_timesteps(timesteps, "timesteps")]

    def timestep_at(self, t) -> np.ndarray:
        """The training timestep whose intrinsic time is nearest to ``t`` (int64)."""
        t = np.asarray(t, dtype=np.float64)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"t must be finite and >= 0, got {t!r}")
        return np.abs(self.train_times[:, None] - t.reshape(1, -1)).argmin(0).reshape(t.shape)

    def _check_timesteps(self, timesteps, name: str) -> np.ndarray:
        arr = (
            timesteps.detach().cpu().numpy()
            if torch.is_tensor(timesteps)
            else np.asarray(timesteps)
        )
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"{name} must be integers, got {timesteps!r}")
        elif arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integers, got {timesteps!r}")
        arr = arr.astype(np.int64)
        n = self.config.num_train_timesteps
        if np.any(arr < 0) or np.any(arr >= n):
            raise ValueError(
                f"{name} must lie in the trained range [0, {n - 1}], got {arr.min()}..{arr.max()}"
            )
        return arr

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim < 1:
            raise ValueError(f"{name} must be a tensor of shape (B, ...)")
        size = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
        if size != self.dim:
            raise ValueError(
                f"{name}: each sample has {size} values (shape "
                f"{tuple(x.shape[1:])}), but the process has d = {self.dim} "
                f"(U is {self.dim} x {self.dim})"
            )
        return x.reshape(x.shape[0], self.dim)

    # ------------------------------------------------------------------ forward process
    @single_threaded
    def _train_tables(self, dtype, device):
        """``(M, R)`` at every training timestep as operator stacks (the process's
        blocks: (N, d, d) dense, (N, m, g, g) structured) in ``dtype`` on ``device``,
        computed in chunks of timesteps (the kernel and the gDDIM factor hold about
        30 temporaries of the blocks' size per time)."""
        if self._tables is None:
            n, blk = self.train_times.size, self.process.drift_blocks.shape
            M, R = np.empty((n, *blk)), np.empty((n, *blk))
            chunk = max(1, _TABLE_CHUNK_BYTES // (8 * 30 * int(np.prod(blk))))
            start = report = time.perf_counter()
            for i in range(0, n, chunk):
                ts = self.train_times[i : i + chunk]
                M[i : i + chunk] = self.process.kernel_blocks(ts)[0]
                R[i : i + chunk] = self.process.gddim_blocks(ts)
                now = time.perf_counter()
                if now - report > 10.0:  # a long build says how far it is
                    report = now
                    print(
                        f"nonrev: scheduler tables M_t, R_t: {min(i + chunk, n)} of {n} "
                        f"training timesteps, {now - start:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            self._tables = (M, R)
        key = (dtype, str(device))
        if key not in self._table_cache:
            self._table_cache[key] = tuple(
                self.process.operators(a, dtype=dtype, device=device) for a in self._tables
            )
        return self._table_cache[key]

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps
    ) -> torch.Tensor:
        """``x_t = M_t x_0 + R_t noise`` with one timestep per sample (or one for all):
        the exact forward kernel, in the factor ``R_t`` that the samplers use."""
        x0 = self._flat(original_samples, "original_samples")
        _floating(x0, "original_samples")
        if not torch.is_tensor(noise) or noise.shape != original_samples.shape:
            raise ValueError(
                f"noise must have the shape of original_samples {tuple(original_samples.shape)}"
            )
        _floating(noise, "noise")
        ks = self._check_timesteps(timesteps, "timesteps").reshape(-1)
        B = x0.shape[0]
        if ks.size == 1:
            ks = np.full(B, ks[0])
        if ks.size != B:
            raise ValueError(
                f"timesteps must be one integer or one per sample ({B}), got {ks.size}"
            )
        M, R = self._train_tables(x0.dtype, x0.device)
        idx = torch.as_tensor(ks, device=x0.device)
        z = noise.reshape(B, self.dim).to(dtype=x0.dtype, device=x0.device)
        out = M.apply_rows(idx, x0) + R.apply_rows(idx, z)
        return out.reshape(original_samples.shape)

    def sample_prior(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Draws from ``N(0, U^{-1})`` in ``shape`` = (B, ...): ``z L^T`` with ``L`` the
        Cholesky factor of ``U^{-1}`` and ``z`` from ``randn_tensor(shape, generator)``
        (so ``U = I`` gives exactly the stock pipelines' starting noise)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or int(np.prod(shape[1:])) != self.dim:
            raise ValueError(f"shape {shape}: each sample must have {self.dim} values")
        z = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        chol = self.process.operators(
            np.linalg.cholesky(self.process.stationary_cov_blocks)[None],
            dtype=dtype,
            device=z.device,
        )
        return chol.apply(0, z.reshape(shape[0], self.dim)).reshape(shape)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The identity (the network sees ``x_t`` as :meth:`add_noise` made it)."""
        return sample

    # ------------------------------------------------------------------ reverse process
    @single_threaded
    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose ``num_inference_steps`` decreasing training timesteps (spacing as in
        DDPMScheduler) and precompute the method's coefficients on their intrinsic
        times, with ``t = 0`` appended as the end of the last step."""
        n_train = self.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or not 1 <= num_inference_steps <= n_train
        ):
            raise ValueError(
                f"num_inference_steps must be an integer in [1, {n_train}], got "
                f"{num_inference_steps!r}"
            )
        ts = _inference_timesteps(
            n_train,
            int(num_inference_steps),
            self.config.timestep_spacing,
            int(self.config.steps_offset),
        )
        ts = self._check_timesteps(ts, "timesteps (from steps_offset)")
        if np.any(np.diff(ts) >= 0):
            raise ValueError(
                "the timesteps of this spacing are not strictly decreasing; "
                "use fewer steps or another timestep_spacing"
            )
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.from_numpy(ts).to(device)
        grid = np.concatenate([[0.0], self.train_times[ts[::-1]]])  # increasing, ends at 0
        coef = coefficients(self.process, grid, self.config.method, dtype=torch.float64)
        proc, ts = self.process, coef.times[:-1]  # sampling order, without t = 0
        R = proc.gddim_blocks(ts)
        Minv = np.linalg.inv(proc.pair_blocks(ts)[0])
        self._coef64 = (coef, *(proc.operators(a) for a in (np.linalg.inv(R), R, Minv)))
        self._coef_cache = {}
        self._state, self._prev_k = None, None

    def _coefficients(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._coef_cache:
            coef, Rinv, R, Minv = self._coef64
            self._coef_cache[key] = (
                coef.to(dtype, device),
                *(a.to(dtype=dtype, device=device) for a in (Rinv, R, Minv)),
            )
        return self._coef_cache[key]

    def step(
        self,
        model_output: torch.Tensor,
        timestep,
        sample: torch.Tensor,
        generator=None,
        return_dict: bool = True,
    ):
        """One reverse step from ``timestep`` to the next of :attr:`timesteps` (to
        ``t = 0`` after the last), by nonrev's step function of ``method``.

        ``model_output``: the network's output at ``(sample, timestep)`` (see
        ``prediction_type``); ``generator``: for the ancestral noise, drawn as
        DDPMScheduler draws it (one ``randn_tensor`` of the sample's shape at each
        step from a timestep > 0), so a shared generator gives the same draws.
        """
        if self._coef64 is None:
            raise ValueError("call set_timesteps before step")
        x = self._flat(sample, "sample")
        _floating(x, "sample")
        if not torch.is_tensor(model_output) or model_output.shape != sample.shape:
            raise ValueError(
                f"model_output must have the shape of sample {tuple(sample.shape)}, "
                f"got {tuple(getattr(model_output, 'shape', ()))}"
            )
        _floating(model_output, "model_output")
        t_arr = self._check_timesteps(timestep, "timestep")
        if t_arr.size != 1:
            raise ValueError(f"timestep must be a single integer, got {t_arr.size} of them")
        t_int = int(t_arr.reshape(-1)[0])
        hits = (self.timesteps.cpu() == t_int).nonzero()
        if hits.numel() == 0:
            raise ValueError(
                f"timestep {t_int} is not one of the timesteps set by "
                f"set_timesteps ({self.timesteps.tolist()})"
            )
        k = int(hits[0, 0])
        coef, Rinv, R, Minv = self._coefficients(x.dtype, x.device)
        out = model_output.reshape(x.shape[0], self.dim).to(x.dtype)
        state = self._state if (self._prev_k is not None and self._prev_k == k - 1) else None
        if coef.record.multistep and k > 0 and state is None:
            raise ValueError(
                f"{coef.method} is a multistep method: call step on the timesteps "
                "in order, starting from the first (call set_timesteps to restart)"
            )
        noise = None
        if coef.stochastic:
            if t_int > 0:
                noise = randn_tensor(
                    sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
                ).reshape(x.shape)
            else:
                noise = torch.zeros_like(x)
        if self.config.prediction_type == "epsilon":
            # score = -Sigma_t^{-1} R_t eps = -R_t^{-T} eps (rows: -eps R_t^{-1})
            x_new, state = nonrev_step(
                coef, k, x, score=-Rinv.apply_t(k, out), noise=noise, state=state
            )
            x0_hat = Minv.apply(k, x - R.apply(k, out))
        else:
            x0_hat = out
            x_new, state = nonrev_step(coef, k, x, x0_hat, noise=noise, state=state)
        self._state, self._prev_k = state, k
        prev = x_new.reshape(sample.shape)
        pred = x0_hat.reshape(sample.shape)
        if not return_dict:
            return (prev, pred)
        return NonReversibleSchedulerOutput(prev_sample=prev, pred_original_sample=pred)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ files
    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """``scheduler_config.json`` plus ``nonrev_process.safetensors`` (``U`` and ``Q``,
        float64) in ``save_directory``; the config carries the sha256 of both files
        (:data:`CHECKSUM_KEY`), which :meth:`from_pretrained` verifies. Each file is
        written atomically."""
        from safetensors.numpy import save as st_save

        from nonrev.outputs import write_bytes

        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, not a directory")
        os.makedirs(save_directory, exist_ok=True)
        blob = st_save(_process_arrays(self.process))
        write_bytes(os.path.join(save_directory, PROCESS_FILE), blob)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        cfg_path = os.path.join(save_directory, self.config_name)
        with open(cfg_path, encoding="utf-8") as fh:
            doc = json.load(fh)
        doc[CHECKSUM_KEY] = _BLANK
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if text.count(_BLANK) != 1:  # pragma: no cover - a config value of 64 zeros
            raise ValueError(f"{cfg_path}: cannot place the checksum")
        digest = hashlib.sha256(blob + text.encode()).hexdigest()
        write_bytes(cfg_path, text.replace(_BLANK, digest, 1).encode())

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path=None,
        subfolder=None,
        return_unused_kwargs: bool = False,
        **kwargs,
    ):
        """Load a scheduler saved by :meth:`save_pretrained` from a local directory
        (``U`` and ``Q`` from ``nonrev_process.safetensors``; ``U=``/``Q=`` given here
        take precedence)."""
        folder = Path(pretrained_model_name_or_path)
        if subfolder:
            folder = folder / subfolder
        cfg_path = folder / cls.config_name
        if "U" not in kwargs and "process" not in kwargs:
            for key, value in _read_process(folder / PROCESS_FILE, cfg_path, cls).items():
                kwargs.setdefault(key, value)
        try:
            config, kwargs = cls.load_config(str(folder), return_unused_kwargs=True, **kwargs)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # diffusers' own errors
            raise SchedulerFileError(
                f"{cfg_path}: cannot be read as a scheduler config "
                f"({' '.join(str(exc).split())[:200]})"
            ) from None
        config = dict(config)
        config.pop(CHECKSUM_KEY, None)
        try:
            return cls.from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SchedulerFileError(f"{cfg_path}: {' '.join(str(exc).split())[:300]}") from None

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """As ConfigMixin.from_config, with ``U`` (and ``Q``) passed as keywords: they
        are not part of the config."""
        if config is None:
            raise ValueError("config is required")
        U, Q, process = kwargs.pop("U", None), kwargs.pop("Q", None), kwargs.pop("process", None)
        init_dict, unused, hidden = cls.extract_init_dict(dict(config), **kwargs)
        model = cls(U=U, Q=Q, process=process, **init_dict)
        if "_class_name" in hidden:
            hidden["_class_name"] = cls.__name__
        model.register_to_config(**hidden)
        unused = {**unused, **hidden}
        return (model, unused) if return_unused_kwargs else model


def _read_process(path: Path, cfg_path: Path, cls) -> dict:
    """``{"U": ..., "Q": ...}`` from a saved scheduler's process file, after checking
    the sha256 that the config records over both files. SchedulerFileError (one line
    naming the file) for anything missing, truncated, modified or unreadable."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    for p in (cfg_path, path):
        if not p.is_file():
            raise SchedulerFileError(
                f"{p}: no such file; a NonReversibleScheduler folder "
                f"holds {cls.config_name} and {PROCESS_FILE} (download "
                "a Hub repository first)"
            )
    try:
        blob, raw = path.read_bytes(), cfg_path.read_bytes()
    except OSError as exc:
        raise SchedulerFileError(f"{exc.filename}: cannot be read ({exc.strerror})") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchedulerFileError(
            f"{cfg_path}: not valid JSON (truncated or edited?): {' '.join(str(exc).split())[:120]}"
        ) from None
    digest = doc.get(CHECKSUM_KEY) if isinstance(doc, dict) else None
    if not isinstance(digest, str) or len(digest) != 64 or raw.count(digest.encode()) != 1:
        raise SchedulerFileError(
            f"{cfg_path}: no {CHECKSUM_KEY!r} checksum of the scheduler's "
            "files (edited, or saved by an older nonrev: load it with U= "
            "and Q= given, and save it again)"
        )
    if (
        hashlib.sha256(blob + raw.replace(digest.encode(), _BLANK.encode(), 1)).hexdigest()
        != digest
    ):
        raise SchedulerFileError(
            f"{path} / {cfg_path}: contents do not match the saved "
            "checksum (sha256 differs): a file is truncated or was modified"
        )
    try:
        arrays = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise SchedulerFileError(
            f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:120]})"
        ) from None
    if any(k.startswith(_SPECTRAL) for k in arrays):
        from nonrev.process.spectral import SpectralProcess

        parts = {k[len(_SPECTRAL) :]: v for k, v in arrays.items() if k.startswith(_SPECTRAL)}
        try:
            return {"process": SpectralProcess.from_arrays(parts, source=str(path))}
        except ValueError as exc:
            raise SchedulerFileError(str(exc)) from None
    if "U" not in arrays:
        raise SchedulerFileError(f"{path}: has no tensor 'U'")
    return {"U": arrays["U"], "Q": arrays.get("Q")}


#: Prefix of a structured (spectral) process's arrays in the process file.
_SPECTRAL = "spectral."


def _process_arrays(process) -> dict:
    """What the process file holds: ``U`` and ``Q`` (float64) of a dense kernel, the
    arrays of :meth:`SpectralProcess.to_arrays` (prefixed ``spectral.``) otherwise."""
    if hasattr(process, "to_arrays"):
        return {_SPECTRAL + k: np.ascontiguousarray(v) for k, v in process.to_arrays().items()}
    return {"U": np.ascontiguousarray(process.U), "Q": np.ascontiguousarray(process.Q)}


class NonReversiblePipeline(DiffusionPipeline):
    """Unconditional image generation with a :class:`NonReversibleScheduler`.

    ``pipe(batch_size=..., num_inference_steps=..., generator=..., output_type="np")``
    draws ``x_T ~ N(0, U^{-1})`` (:meth:`NonReversibleScheduler.sample_prior`), runs
    ``unet(x, t).sample`` through ``scheduler.step`` on the scheduler's timesteps and
    returns ``ImagePipelineOutput(images=...)``: ``output_type`` ``"np"`` (B, H, W, C)
    floats in [0, 1], ``"pil"`` a list of PIL images, ``"pt"`` (B, C, H, W) tensors in
    [0, 1]; the images are ``(x / 2 + 0.5)`` clipped, as in DDPMPipeline (data in
    [-1, 1]).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler: NonReversibleScheduler):
        super().__init__()
        if not isinstance(scheduler, NonReversibleScheduler):
            raise ValueError(
                f"scheduler must be a NonReversibleScheduler, got {type(scheduler).__name__}"
            )
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator=None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if output_type not in ("np", "pil", "pt"):
            raise ValueError(f"output_type must be 'np', 'pil' or 'pt', got {output_type!r}")
        size = self.unet.config.sample_size
        hw = (size, size) if isinstance(size, int) else tuple(size)
        shape = (int(batch_size), self.unet.config.in_channels, *hw)
        if int(np.prod(shape[1:])) != self.scheduler.dim:
            raise ValueError(
                f"the unet makes samples of shape {shape[1:]} "
                f"({int(np.prod(shape[1:]))} values) but the scheduler's U is "
                f"{self.scheduler.dim} x {self.scheduler.dim}"
            )
        image_shape = getattr(self.scheduler.process, "shape", None)
        if image_shape is not None and tuple(shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"the unet makes samples of shape {shape[1:]} but the scheduler's "
                f"process was built for images of shape {tuple(image_shape)}"
            )
        device = self._execution_device
        image = self.scheduler.sample_prior(
            shape, generator=generator, device=device, dtype=self.unet.dtype
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_output = self.unet(image, t).sample
            image = self.scheduler.step(model_output, t, image, generator=generator).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

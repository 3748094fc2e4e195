"""Training learned scores: the loop, the EMA of the weights, and checkpoints.

:func:`train` fits a noise-prediction network by denoising score matching with the
exact kernel (:mod:`nonrev.scores.neural`): the data are normalised
(:class:`~nonrev.data.datasets.Normaliser`), the process is built from the ``u`` and
``q`` choices (:func:`nonrev.process.spec.process_from_spec`), its kernel is computed once on a grid
of ``n_times`` times in ``[t_min, t_max]``, and every step draws

* ``batch_size`` training rows (uniformly, with replacement),
* ``time_groups`` grid indices, one from each of ``time_groups`` equal strata of the
  grid (stratified: every batch covers the whole range), each shared by
  ``batch_size / time_groups`` rows,
* the noise ``z``,

from one ``torch.Generator`` seeded with ``seed``, and takes one AdamW step on
``mean |eps_theta(M_t x_0 + L_t z, t) - z|^2`` (linear warm-up, then constant or
cosine learning rate; gradient-norm clipping). An exponential moving average of the
weights, with decay ``min(ema_decay, (1 + k) / (10 + k))`` after ``k`` updates, is
what sampling uses.

**Checkpoints** (a folder): ``checkpoint.json`` (format version, step, the whole
config, U and Q as lists, the normalisation, the data's shape and source, the EMA
decay and count, loss history, elapsed time, library versions, and the name,
sha256 and tensor shapes of the weights file) and ``weights-<step>.safetensors``
(model, EMA, AdamW moments and the generator state, flattened; no pickle
anywhere). A new weights file is written first (temporary name, fsync,
``os.replace``), then the JSON (same way), then older weights files are removed, so
an interruption at any moment leaves a consistent pair. Checkpoints are written
every ``checkpoint_minutes`` (the first already after :data:`FIRST_CHECKPOINT_S`
seconds), every ``checkpoint_steps`` steps if set, when ``should_stop`` asks, and at
the end; temporary files that a killed writer left in the folder are removed when a
run starts or resumes there. Resuming restores the weights, optimizer,
EMA and generator state exactly, so on one machine an interrupted and resumed run
gives the same weights as an uninterrupted one.

:func:`load_checkpoint` validates everything it reads (JSON schema, config, U and
Q, normalisation, the weights' sha256, tensor names and shapes) and raises
:class:`CheckpointError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nonrev.config import COUNT_MAX, ConfigError, check_memory, field, from_dict, show, to_dict
from nonrev.data.datasets import Dataset, Normaliser, load_dataset
from nonrev.data.files import check_dense_memory
from nonrev.linalg import sample_covariance
from nonrev.outputs import remove_partials, write_bytes
from nonrev.process.ou import OUProcess
from nonrev.process.spec import condition_cap_of, gamma_of, process_from_spec
from nonrev.process.spectral import SpectralProcess, spectral_from_spec
from nonrev.process.stiffness import warn_if_too_stiff
from nonrev.regimes.theory import covariance_blocks
from nonrev.samplers import SPACINGS, get_method, sample, time_grid
from nonrev.scores.neural import NeuralScore, Parameterisation, build_network, dsm_loss
from nonrev.version import __version__

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainedModel",
    "EMA",
    "load_checkpoint",
    "process_from_spec",
    "quick_config",
    "train",
]

#: Seconds after the start of a run (fresh, or resumed) at which the first checkpoint
#: is written, when ``checkpoint_minutes`` asks for later ones: a run stopped early
#: (SIGKILL, a lost machine) can still be resumed.
FIRST_CHECKPOINT_S = 10.0

FORMAT = "nonrev-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used (missing, truncated, modified)."""


# ---------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything a training run depends on (validated by ``nonrev.config.from_dict``)."""

    data: str = field(
        "digits",
        help="digits | patches | moons | circles | ring | .npy/.npz file | image folder",
    )
    key: str = field("", help="array name in an .npz data file")
    image_size: int = field(16, min=2, max=256, help="side of resized folder images (and patches)")
    color: str = field("auto", choices=("auto", "gray", "rgb"), help="folder images")
    n_points: int = field(
        4000, min=8, max=COUNT_MAX, help="size of a generated 2-D toy set or of patches"
    )
    test_fraction: float = field(0.2, min=0.01, max=0.9)
    n_train: int = field(
        0, min=0, max=COUNT_MAX, help="use only the first n_train training rows (0: all)"
    )
    split_seed: int = field(0, min=0, help="seed of the train/test split (and toy data)")
    u: str = field(
        "data:10",
        help="identity | data | data:<k> (condition number capped "
        "at k) | FILE (a (d, d) SPD matrix); data:10 and data_frame: "
        "the best of the digits grid (README)",
    )
    q: str = field("none", help="none | optimal | gamma:<x> | rate:<x> | FILE (antisymmetric)")
    kernel: str = field(
        "dense",
        choices=("dense", "spectral"),
        help="dense: U and Q as d x d matrices; spectral: U diagonal and Q "
        "block-diagonal in the images' 2-D DCT (nonrev.process.SpectralProcess; "
        "image data, u: identity | data | data:<k>, q: none | optimal | gamma:<x>)",
    )
    groups: int = field(
        2, min=2, max=4096, help="spectral: frequencies per group of the current (divides d)"
    )
    network: str = field(
        "mlp",
        choices=("mlp", "conv", "auto"),
        help="mlp or conv (image data); auto: mlp, read from older checkpoints",
    )
    precondition: bool = field(
        True,
        help="Gaussian preconditioning of the noise prediction "
        "(nonrev.scores.neural.Parameterisation)",
    )
    parametrisation: str = field(
        "data_frame",
        choices=("gaussian", "data_frame"),
        help="with precondition: the network's input, output and "
        "time in the noise frame (gaussian) or in the data "
        "frame, with the noise level as time (data_frame)",
    )
    hidden: int = field(512, min=8, max=16384, help="mlp width")
    depth: int = field(3, min=1, max=256, help="residual blocks")
    channels: int = field(64, min=8, max=4096, help="conv channels")
    emb_dim: int = field(128, min=2, max=16384, help="time embedding size (even)")
    steps: int = field(20000, min=1, max=10**9)
    batch_size: int = field(256, min=1, max=10**6)
    time_groups: int = field(
        16, min=1, max=10**6, help="distinct grid times per batch (divides batch_size)"
    )
    lr: float = field(1e-3, min=1e-8, max=1.0)
    weight_decay: float = field(0.0, min=0.0)
    warmup: int = field(200, min=0, max=10**9, help="linear learning-rate warm-up steps")
    lr_schedule: str = field("cosine", choices=("cosine", "constant"))
    ema_decay: float = field(0.999, min=0.0, max=0.99999)
    grad_clip: float = field(1.0, min=0.0, help="max gradient norm (0: off)")
    t_min: float = field(
        1e-2, min=1e-6, help="smallest training time (and default end of sampling)"
    )
    t_max: float = field(10.0, min=1e-3, help="largest training time (largest T to sample from)")
    n_times: int = field(
        0, min=0, max=100_000, help="training grid size (0: auto, 1000 for d <= 128)"
    )
    spacing: str = field(
        "log",
        choices=(*SPACINGS, "snr"),
        help="training grid spacing: uniform or log in t, or snr (evenly "
        "in the log noise level of the data, which needs precondition)",
    )
    seed: int = field(0, min=0)
    device: str = field("cpu")
    amp: bool = field(False, help="bfloat16 autocast (off by default; no gain on small CPUs)")
    checkpoint_minutes: float = field(3.0, min=0.0, help="0: only at the end")
    checkpoint_steps: int = field(0, min=0, max=10**9, help="also every this many steps (0: off)")
    log_every: int = field(50, min=1, max=10**9, help="steps per entry of the loss history")

    def validate(self, prefix=""):
        if self.batch_size % self.time_groups:
            raise ConfigError(
                f"{prefix}time_groups: must divide batch_size ({self.batch_size}), "
                f"got {self.time_groups}"
            )
        if self.t_min >= self.t_max:
            raise ConfigError(f"{prefix}t_max: must be > t_min ({self.t_min}), got {self.t_max}")
        if self.spacing == "snr" and not self.precondition:
            raise ConfigError(f"{prefix}spacing: snr needs precondition (the data covariance)")
        if self.emb_dim % 2:
            raise ConfigError(f"{prefix}emb_dim: must be even, got {self.emb_dim}")
        if self.n_times == 1:
            raise ConfigError(f"{prefix}n_times: must be 0 (auto) or >= 2")
        for key, check in (("u", condition_cap_of), ("q", gamma_of)):
            try:
                check(getattr(self, key))
            except ValueError as exc:
                raise ConfigError(f"{prefix}{key}: {exc}") from None
        try:
            dev = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"{prefix}device: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"{prefix}device: {show(self.device)} asked for, but CUDA is not available"
            )


def quick_config(**overrides) -> TrainConfig:
    """``nonrev train --quick``: a usable digits model on a CPU in minutes
    (see the README for the measured time)."""
    base = dict(steps=8000, batch_size=256, hidden=256, depth=3, ema_decay=0.995, warmup=100)
    base.update(overrides)
    return from_dict(TrainConfig, base)


def grid_size(cfg: TrainConfig, dim: int) -> int:
    """Training grid size: ``n_times``, or (auto) 1000 for the spectral kernel and
    ``clip(2^25 / d^2, 50, 1000)`` for the dense one, so that its six stored (n, d, d)
    tables stay under about 770 MiB in float32."""
    if cfg.n_times:
        return cfg.n_times
    if cfg.kernel == "spectral":
        return 1000
    return int(min(1000, max(50, 2**25 // (dim * dim))))


def _network_kind(cfg: TrainConfig, shape) -> str:
    return "mlp" if cfg.network == "auto" else cfg.network


def _parameterisation(cfg: TrainConfig, process: OUProcess, cov) -> Parameterisation:
    """The parametrisation the config asks for (``cov``: the normalised training
    covariance, unused without preconditioning)."""
    if not cfg.precondition:
        return Parameterisation(process)
    return Parameterisation(process, cov, kind=cfg.parametrisation, t_range=(cfg.t_min, cfg.t_max))


def _make_network(cfg: TrainConfig, dim: int, shape) -> torch.nn.Module:
    kind = _network_kind(cfg, shape)
    arch = (
        dict(hidden=cfg.hidden, depth=cfg.depth, emb_dim=cfg.emb_dim)
        if kind == "mlp"
        else dict(channels=cfg.channels, depth=cfg.depth, emb_dim=cfg.emb_dim)
    )
    return build_network(kind, dim=dim, shape=shape, t_min=cfg.t_min, t_max=cfg.t_max, **arch)


# ---------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's parameters.

    After the k-th update ``e <- d_k e + (1 - d_k) p`` with
    ``d_k = min(decay, (1 + k) / (10 + k))`` (a short memory early on, so a short
    run is not dominated by the initial weights).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.shadow[n])


# ---------------------------------------------------------------------------- model
@dataclass
class TrainedModel:
    """A trained score model with everything needed to sample in data units.

    ``network`` holds the EMA weights (or the raw ones, see :func:`load_checkpoint`);
    ``param`` and ``tables`` are the parameterisation and its matrices on the
    training grid (:mod:`nonrev.scores.neural`); ``data`` describes the data
    (``dim``, ``shape``, ``sample_shape``, ``channels_last``, ``value_range``,
    ``name``, ``source``, ``n_train``, ``n_test``).
    """

    config: TrainConfig
    process: OUProcess
    param: Parameterisation
    tables: object
    network: torch.nn.Module
    normaliser: Normaliser
    data: dict
    step: int
    loss_history: list

    def score(self) -> NeuralScore:
        """The learned score ``-L_t^{-T} eps_theta(x, t)`` (normalised units)."""
        return NeuralScore(self.network, self.param, self.tables)

    def sample(
        self,
        n: int,
        steps: int,
        method: str = "ancestral",
        *,
        T: float | None = None,
        t_min: float | None = None,
        spacing: str = "log",
        seed: int = 0,
        batch_size: int = 2000,
        denoise: bool = True,
        score=None,
    ):
        """``n`` samples in the data's original units, as (n, d) float64 rows.

        Reverse process from ``T`` (default: the training ``t_max``) down to
        ``t_min`` (default: the training ``t_min``) with ``steps`` steps of
        ``method`` on a ``spacing`` grid, then (``denoise``) one Tweedie step to
        ``E[x_0 | x_{t_min}]``; started from the noise law ``N(0, U^{-1})``. Drawn in
        batches of ``batch_size`` from one generator seeded with ``seed``. Returns
        ``(samples, nfe)`` with ``nfe`` the score evaluations per sample.
        """
        get_method(method)  # ValueError naming the registered methods
        cfg = self.config
        T = cfg.t_max if T is None else float(T)
        t_min = cfg.t_min if t_min is None else float(t_min)
        score = score or self.score()
        gen = torch.Generator().manual_seed(int(seed))
        device = next(self.network.parameters()).device
        out, nfe = [], 0
        for start in range(0, int(n), int(batch_size)):
            b = min(int(batch_size), int(n) - start)
            x, info = sample(
                score,
                self.process,
                n=b,
                T=T,
                steps=int(steps),
                method=method,
                t_min=t_min,
                spacing=spacing,
                generator=gen,
                denoise=denoise,
                device=device,
            )
            out.append(x.detach().cpu().double().numpy())
            nfe = info["nfe"]
        return self.normaliser.inverse(np.concatenate(out)), nfe


# ---------------------------------------------------------------------------- I/O helpers
def _versions() -> dict:
    import safetensors

    return {
        "nonrev": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _data_meta(ds: Dataset, n_train: int) -> dict:
    return {
        "name": ds.name,
        "dim": ds.dim,
        "shape": None if ds.shape is None else list(ds.shape),
        "sample_shape": list(ds.sample_shape),
        "channels_last": bool(ds.channels_last),
        "value_range": None if ds.value_range is None else list(ds.value_range),
        "source": ds.source,
        "n_train": int(n_train),
        "n_test": int(ds.test.shape[0]),
    }


@dataclass
class _State:
    cfg: TrainConfig
    data: dict
    normaliser: Normaliser
    process: OUProcess
    param: Parameterisation
    model: torch.nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    loss_history: list = dataclasses.field(default_factory=list)
    loss_window: list = dataclasses.field(default_factory=list)  # losses since the last entry
    elapsed: float = 0.0


def _tensors(state: _State) -> dict:
    t = {f"model.{n}": p.detach().cpu().contiguous() for n, p in state.model.named_parameters()}
    t.update({f"ema.{n}": e.detach().cpu().contiguous() for n, e in state.ema.shadow.items()})
    for i, st in state.opt.state_dict()["state"].items():
        for k, v in st.items():
            t[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    t["rng.torch"] = state.gen.get_state()
    if state.param.preconditioned:
        t["data.cov"] = torch.as_tensor(state.param.cov)
    if isinstance(state.process, SpectralProcess):
        for k, v in state.process.to_arrays().items():
            t[f"{SPECTRAL_PREFIX}{k}"] = torch.as_tensor(v)
    return t


#: Prefix of the spectral process's arrays in the weights file (its JSON entry is
#: ``{"kind": "spectral"}``; a dense process is stored as U and Q lists in the JSON).
SPECTRAL_PREFIX = "process."


def _process_doc(process) -> dict:
    if isinstance(process, SpectralProcess):
        return {"kind": "spectral", "shape": list(process.shape)}
    return {"U": process.U.tolist(), "Q": process.Q.tolist()}


def _read_process(entry: dict, tensors: dict, data: dict, where: str):
    """The process of a checkpoint: U and Q from the JSON, or a spectral process from
    the weights file's ``process.*`` arrays (refused if written for another shape)."""
    if entry.get("kind", "dense") == "spectral":
        arrays = {
            k[len(SPECTRAL_PREFIX) :]: v.double().numpy() if v.is_floating_point() else v.numpy()
            for k, v in tensors.items()
            if k.startswith(SPECTRAL_PREFIX)
        }
        return SpectralProcess.from_arrays(arrays, shape=data["shape"], source=where)
    U = np.asarray(entry["U"], dtype=np.float64)
    Q = np.asarray(entry["Q"], dtype=np.float64)
    return OUProcess(U, Q)


def save_checkpoint(out: Path, state: _State) -> Path:
    """Write ``weights-<step>.safetensors`` then ``checkpoint.json`` atomically."""
    from safetensors.torch import save as st_save

    out.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(state)
    blob = st_save(tensors)
    wname = f"weights-{state.step:09d}.safetensors"
    write_bytes(out / wname, blob)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(state.step),
        "config": to_dict(state.cfg),
        "network": {
            "kind": _network_kind(state.cfg, state.data["shape"]),
            "parameters": int(sum(p.numel() for p in state.model.parameters())),
        },
        "process": _process_doc(state.process),
        "normalisation": state.normaliser.to_dict(),
        "data": state.data,
        "ema": {"decay": state.ema.decay, "updates": int(state.ema.updates)},
        "weights": {
            "file": wname,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
        },
        "loss_history": state.loss_history,
        "loss_window": state.loss_window,
        "elapsed_s": float(state.elapsed),
        "versions": _versions(),
    }
    write_bytes(out / CHECKPOINT_JSON, json.dumps(doc, indent=1).encode())
    for old in out.glob("weights-*.safetensors"):
        if old.name != wname:
            old.unlink(missing_ok=True)
    return out / CHECKPOINT_JSON


# ---------------------------------------------------------------------------- loading
_SCHEMA = {
    "format": str,
    "format_version": int,
    "step": int,
    "config": dict,
    "network": dict,
    "process": dict,
    "normalisation": dict,
    "data": dict,
    "ema": dict,
    "weights": dict,
    "loss_history": list,
    "loss_window": list,
    "elapsed_s": (int, float),
    "versions": dict,
}
_DATA_SCHEMA = {
    "name": str,
    "dim": int,
    "shape": (list, type(None)),
    "sample_shape": list,
    "channels_last": bool,
    "value_range": (list, type(None)),
    "source": dict,
    "n_train": int,
    "n_test": int,
}


def _check_schema(obj: dict, schema: dict, where: str) -> None:
    """Every key of ``schema`` present with a value of its type (a bool is not an int)."""
    for key, tp in schema.items():
        if key not in obj:
            raise CheckpointError(f"{where}: missing key {key!r}")
        val = obj[key]
        types = tp if isinstance(tp, tuple) else (tp,)
        if not isinstance(val, types) or (isinstance(val, bool) and bool not in types):
            raise CheckpointError(f"{where}: {key!r} has the wrong type ({type(val).__name__})")


def _check_shapes(data: dict, where: str) -> None:
    """``dim`` positive; ``shape`` (None or the network's (C, H, W)) and
    ``sample_shape`` lists of positive integers whose product is ``dim``."""
    dim = data["dim"]
    if dim < 1:
        raise CheckpointError(f"{where}: 'dim' must be a positive integer, got {dim}")
    for key in ("shape", "sample_shape"):
        val = data[key]
        if val is None:
            continue
        if (
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in val)
            or math.prod(val) != dim
        ):
            raise CheckpointError(
                f"{where}: {key!r} must list positive integers whose product "
                f"is dim = {dim}, got {str(val)[:80]}"
            )


def _read_doc(folder: Path) -> dict:
    path = folder / CHECKPOINT_JSON
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint folder ({CHECKPOINT_JSON} not found)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: unreadable or not valid JSON (truncated or edited?): "
            f"{' '.join(str(exc).split())}"
        ) from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: must hold a JSON object")
    _check_schema(doc, _SCHEMA, str(path))
    if doc["format"] != FORMAT:
        raise CheckpointError(f"{path}: not a nonrev checkpoint (format {doc['format']!r})")
    if doc["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {doc['format_version']} "
            f"is not supported (this nonrev reads {FORMAT_VERSION})"
        )
    _check_schema(doc["data"], _DATA_SCHEMA, f"{path}: data")
    _check_shapes(doc["data"], f"{path}: data")
    _check_schema(doc["weights"], {"file": str, "sha256": str, "tensors": dict}, f"{path}: weights")
    _check_schema(doc["ema"], {"decay": (int, float), "updates": int}, f"{path}: ema")
    if doc["step"] < 0:
        raise CheckpointError(f"{path}: step must be >= 0")
    return doc


def _read_tensors(folder: Path, doc: dict) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    wname = doc["weights"]["file"]
    if Path(wname).name != wname or not wname.endswith(".safetensors"):
        raise CheckpointError(f"{folder}: bad weights file name {wname!r}")
    wpath = folder / wname
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file missing")
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc["weights"]["sha256"]:
        raise CheckpointError(
            f"{wpath}: contents do not match the checkpoint (sha256 differs): "
            "the file is truncated or was modified"
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{wpath}: not a readable safetensors file ({' '.join(str(exc).split())})"
        ) from None
    listed = {k: list(v) for k, v in doc["weights"]["tensors"].items()}
    found = {k: list(v.shape) for k, v in tensors.items()}
    if listed != found:
        diff = sorted(set(listed) ^ set(found)) or sorted(
            k for k in listed if listed[k] != found[k]
        )
        raise CheckpointError(
            f"{wpath}: tensors do not match the checkpoint's list (first difference: {diff[0]!r})"
        )
    return tensors


def _restore(folder: Path, *, for_training: bool, device=None):
    """Rebuild the run state of a checkpoint folder: ``(doc, state)``.

    Every value read from the folder is untrusted: the checks below name what is
    wrong where they can, and any other failure that an edited ``checkpoint.json``
    can cause (a list where a mapping belongs, null for a number...) is reported as
    a malformed checkpoint, in one line, never as a traceback."""
    try:
        return _restore_unchecked(folder, for_training=for_training, device=device)
    except CheckpointError:
        raise
    except (
        TypeError,
        KeyError,
        ValueError,
        AttributeError,
        IndexError,
        OverflowError,
        RuntimeError,
        RecursionError,
    ) as exc:
        where = folder / CHECKPOINT_JSON
        raise CheckpointError(
            f"{where}: malformed checkpoint ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]})"
        ) from None


def _restore_unchecked(folder: Path, *, for_training: bool, device=None):
    doc = _read_doc(folder)
    where = str(folder / CHECKPOINT_JSON)
    try:
        # checkpoints written before the data-frame parametrisation (and before it became
        # the default) carry no such key: they were trained with the Gaussian one
        cfg = from_dict(TrainConfig, {"parametrisation": "gaussian", **doc["config"]})
    except ConfigError as exc:
        raise CheckpointError(f"{where}: config: {exc}") from None
    if device is not None:
        cfg = dataclasses.replace(cfg, device=str(device))
    data = doc["data"]
    tensors = _read_tensors(folder, doc)
    try:
        process = _read_process(doc["process"], tensors, data, where)
        if process.dim != data["dim"]:
            raise ValueError(
                f"the process has d = {process.dim} but the data have d = {data['dim']}"
            )
        if (cfg.kernel == "spectral") != isinstance(process, SpectralProcess):
            raise ValueError(f"the stored process does not fit the config's kernel {cfg.kernel}")
        normaliser = Normaliser.from_dict(doc["normalisation"], data["dim"])
        shape = None if data["shape"] is None else tuple(int(s) for s in data["shape"])
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"{where}: {' '.join(str(exc).split())}") from None
    # The network the config describes, first without memory (torch's meta device):
    # an edited config (hidden: 16384, depth: 256...) is refused before it allocates.
    try:
        with torch.device("meta"):
            ghost = _make_network(cfg, data["dim"], shape)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: {' '.join(str(exc).split())[:200]}") from None
    for n, p in ghost.named_parameters():
        t = tensors.get("model." + n)
        if t is None or tuple(t.shape) != tuple(p.shape):
            raise CheckpointError(
                f"{where}: tensor model.{n} is missing or has the wrong "
                f"shape for the network in the config"
            )
    try:
        model = _make_network(cfg, data["dim"], shape)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{where}: {' '.join(str(exc).split())}") from None
    params = dict(model.named_parameters())
    for prefix in ("model.", "ema."):
        for n, p in params.items():
            t = tensors.get(prefix + n)
            if t is None or tuple(t.shape) != tuple(p.shape) or t.dtype != p.dtype:
                raise CheckpointError(
                    f"{where}: tensor {prefix + n} is missing or has the wrong "
                    f"shape/dtype for the network in the config"
                )
    known = {f"{p}{n}" for p in ("model.", "ema.") for n in params} | {"rng.torch", "data.cov"}
    extra = [k for k in tensors if k not in known and not k.startswith(("optim.", SPECTRAL_PREFIX))]
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor {extra[0]!r}")
    cov = tensors.get("data.cov")
    m, g = process.basis.blocks
    cov_shape = (data["dim"], data["dim"]) if isinstance(process, OUProcess) else (m, g, g)
    if cfg.precondition != (cov is not None) or (cov is not None and tuple(cov.shape) != cov_shape):
        raise CheckpointError(
            f"{where}: the data covariance (data.cov) is missing or does not "
            "fit the config's preconditioning"
        )
    try:
        param = _parameterisation(cfg, process, None if cov is None else cov.double().numpy())
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors["model." + n])
    dev = torch.device(cfg.device)
    model.to(dev)
    ema = EMA(model, doc["ema"]["decay"])
    ema.updates = doc["ema"]["updates"]
    for n in params:
        ema.shadow[n] = tensors["ema." + n].to(dev).clone()
    gen = torch.Generator()
    opt = _optimizer(cfg, model)
    if for_training:
        if "rng.torch" not in tensors:
            raise CheckpointError(f"{where}: the generator state is missing; cannot resume")
        try:
            gen.set_state(tensors["rng.torch"])
            opt.load_state_dict(_optimizer_state(opt, tensors, len(params)))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{where}: optimizer or generator state does not fit: {' '.join(str(exc).split())}"
            ) from None
    state = _State(
        cfg=cfg,
        data=data,
        normaliser=normaliser,
        process=process,
        param=param,
        model=model,
        ema=ema,
        opt=opt,
        gen=gen,
        step=doc["step"],
        loss_history=doc["loss_history"],
        loss_window=doc["loss_window"],
        elapsed=float(doc["elapsed_s"]),
    )
    return doc, state


def _optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _optimizer_state(opt, tensors: dict, n_params: int) -> dict:
    """AdamW's state dict from the flattened ``optim.<i>.<name>`` tensors (the
    optimizer moves them to its parameters' device itself)."""
    sd = opt.state_dict()
    sd["state"] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            if not i.isdigit() or int(i) >= n_params:
                raise KeyError(f"optimizer tensor {key!r} names no parameter")
            sd["state"].setdefault(int(i), {})[name] = val
    return sd


def load_checkpoint(folder, *, ema: bool = True, device=None) -> TrainedModel:
    """Load a checkpoint folder for sampling: the network with EMA weights (or the
    raw ones with ``ema=False``), the process, the training grid's tables and the
    normalisation. CheckpointError (one line) for anything missing or inconsistent."""
    folder = Path(folder)
    doc, st = _restore(folder, for_training=False, device=device)
    if ema:
        st.ema.copy_to(st.model)
    st.model.eval()
    dev = next(st.model.parameters()).device
    try:
        grid = _grid(st.cfg, st.data["dim"], st.param)
    except ConfigError as exc:
        raise CheckpointError(f"{folder / CHECKPOINT_JSON}: config: {exc}") from None
    tables = st.param.tables(grid, device=dev)
    return TrainedModel(
        config=st.cfg,
        process=st.process,
        param=st.param,
        tables=tables,
        network=st.model,
        normaliser=st.normaliser,
        data=st.data,
        step=st.step,
        loss_history=st.loss_history,
    )


def _grid(cfg: TrainConfig, dim: int, param: Parameterisation) -> np.ndarray:
    # the six float32 tables of the parameterisation, (n, d, d) dense or (n, m, g, g)
    # in blocks, refused before allocation
    m, g = param.blocks
    check_memory("n_times", 24.0 * grid_size(cfg, dim) * m * g * g, "the training grid's tables")
    if cfg.spacing == "snr":
        return param.noise_level_grid(cfg.t_min, cfg.t_max, grid_size(cfg, dim))
    return time_grid(cfg.t_max, grid_size(cfg, dim) - 1, cfg.t_min, cfg.spacing)


# ---------------------------------------------------------------------------- training
def prepare_data(cfg: TrainConfig) -> tuple[Dataset, np.ndarray]:
    """The dataset of ``cfg`` and its training rows (the first ``n_train`` if set)."""
    ds = load_dataset(
        cfg.data,
        split_seed=cfg.split_seed,
        test_fraction=cfg.test_fraction,
        n_points=cfg.n_points,
        image_size=cfg.image_size,
        color=cfg.color,
        key=cfg.key or None,
    )
    X = ds.train
    if cfg.n_train:
        if cfg.n_train > X.shape[0]:
            raise ValueError(
                f"n_train = {cfg.n_train} exceeds the {X.shape[0]} training rows of {cfg.data}"
            )
        X = X[: cfg.n_train]
    if cfg.kernel == "spectral":
        if ds.shape is None:
            raise ValueError(
                f"kernel: spectral needs image data (C, H, W); {cfg.data} holds "
                f"{ds.dim}-dimensional vectors"
            )
    else:
        check_dense_memory(X.shape[1], cfg.data)  # U, Q and the kernel's d x d matrices
    return ds, X


def _lr(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.lr_schedule == "cosine":
        return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    return cfg.lr * warm


def _covariance(X: np.ndarray) -> np.ndarray:
    """Sample covariance (1/n) of the rows of ``X`` about their mean."""
    return sample_covariance(X)


def make_process(cfg: TrainConfig, Xn: np.ndarray, shape):
    """The process of ``cfg`` for the normalised training rows ``Xn``: an
    :class:`OUProcess` from the ``u`` and ``q`` specs (``kernel: dense``) or a
    :class:`~nonrev.process.spectral.SpectralProcess` of images of ``shape``
    (``kernel: spectral``, groups of ``cfg.groups`` frequencies)."""
    if cfg.kernel == "dense":
        return process_from_spec(Xn, cfg.u, cfg.q)
    procs = spectral_from_spec(
        tuple(shape), cfg.u, cfg.q, Xn, option_u="u", option_q="q", groups=cfg.groups
    )
    return list(procs.values())[-1]  # the one with the current, if any


def _data_covariance(process, Xn: np.ndarray) -> np.ndarray:
    """The normalised training covariance the preconditioning uses: (d, d) for a
    dense kernel, its blocks in the process's basis (m, g, g) for a structured one."""
    if isinstance(process, OUProcess):
        return _covariance(Xn)
    return covariance_blocks(process, Xn)


def _fresh_state(cfg: TrainConfig, ds: Dataset, X: np.ndarray) -> _State:
    normaliser = Normaliser.fit(X)
    Xn = normaliser.forward(X)
    process = make_process(cfg, Xn, ds.shape)
    warn_if_too_stiff(process, cfg.t_max, f"--q {cfg.q}")  # before minutes of training
    torch.manual_seed(cfg.seed)  # network initialisation
    model = _make_network(cfg, ds.dim, ds.shape).to(torch.device(cfg.device))
    param = _parameterisation(cfg, process, _data_covariance(process, Xn))
    return _State(
        cfg=cfg,
        data=_data_meta(ds, X.shape[0]),
        normaliser=normaliser,
        process=process,
        param=param,
        model=model,
        ema=EMA(model, cfg.ema_decay),
        opt=_optimizer(cfg, model),
        gen=torch.Generator().manual_seed(cfg.seed),
    )


def _check_same_data(state: _State, ds: Dataset, X: np.ndarray, where: str) -> None:
    old = state.data
    if old["source"] != ds.source or old["dim"] != ds.dim or old["n_train"] != X.shape[0]:
        raise CheckpointError(
            f"{where}: the data have changed since the checkpoint was written "
            f"(source {ds.source.get('path', ds.name)}); cannot resume"
        )


def train(
    cfg: TrainConfig | None = None,
    out=None,
    *,
    resume: bool = False,
    steps: int | None = None,
    device=None,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedModel:
    """Train (or, with ``resume``, continue) a score model; returns it with EMA weights.

    ``cfg``: a :class:`TrainConfig` (ignored when resuming: the checkpoint's config
    is used). ``out``: checkpoint folder (None: no checkpoints; required to resume).
    ``steps``: change the total number of steps (e.g. to extend a finished run;
    with the cosine schedule this changes the remaining learning rates).
    ``device``: override the config's device (resume on another machine).
    ``progress(step, total_steps, loss)`` is called after every step; ``should_stop()`` after
    every step: when it returns True a checkpoint is written and training stops.
    """
    out = None if out is None else Path(out)
    if out is not None and out.is_dir():
        remove_partials(out)  # .weights-*.partial.safetensors of a run killed while writing
    if resume:
        if out is None:
            raise ValueError("resume needs the checkpoint folder (out)")
        _, state = _restore(out, for_training=True, device=device)
        if steps is not None:
            state.cfg = dataclasses.replace(state.cfg, steps=int(steps))
        ds, X = prepare_data(state.cfg)
        _check_same_data(state, ds, X, str(out))
    else:
        if cfg is None:
            raise ValueError("cfg is required unless resuming")
        cfg = from_dict(TrainConfig, to_dict(cfg))
        changes = {}
        if steps is not None:
            changes["steps"] = int(steps)
        if device is not None:
            changes["device"] = str(device)
        cfg = dataclasses.replace(cfg, **changes) if changes else cfg
        ds, X = prepare_data(cfg)
        state = _fresh_state(cfg, ds, X)
    cfg = state.cfg
    dev = torch.device(cfg.device)
    Xn = torch.as_tensor(state.normaliser.forward(X), dtype=torch.float32, device=dev)
    grid = _grid(cfg, ds.dim, state.param)
    tables = state.param.tables(grid, device=dev)
    n_grid, G = len(grid), cfg.time_groups
    m = cfg.batch_size // G
    strata = torch.arange(G, dtype=torch.float64) * (n_grid / G)
    model, opt, gen = state.model, state.opt, state.gen
    model.train()
    last_save = time.monotonic()
    interval = 60.0 * cfg.checkpoint_minutes
    first_save = True  # the first checkpoint of this session comes early
    t_start = time.monotonic() - state.elapsed
    window = state.loss_window
    stopped = False
    while state.step < cfg.steps:
        idx = (strata + torch.rand(G, generator=gen, dtype=torch.float64) * (n_grid / G)).long()
        idx = idx.clamp_(max=n_grid - 1).to(dev)
        rows = torch.randint(0, Xn.shape[0], (G * m,), generator=gen).to(dev)
        z = torch.randn((G, m, ds.dim), generator=gen).to(dev)
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, state.step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
            loss = dsm_loss(model, Xn[rows].view(G, m, ds.dim), tables.take(idx), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state.ema.update(model)
        state.step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"the loss became {lv} at step {state.step}; lower lr")
        window.append(lv)
        if len(window) == cfg.log_every or state.step == cfg.steps:
            state.loss_history.append([state.step, float(np.mean(window))])
            window.clear()
        if progress is not None:
            progress(state.step, cfg.steps, lv)
        state.elapsed = time.monotonic() - t_start
        stopped = should_stop is not None and should_stop()
        wait = min(interval, FIRST_CHECKPOINT_S) if first_save else interval
        due = (cfg.checkpoint_minutes > 0 and time.monotonic() - last_save >= wait) or (
            cfg.checkpoint_steps > 0 and state.step % cfg.checkpoint_steps == 0
        )
        if out is not None and (due or stopped):
            save_checkpoint(out, state)
            last_save = time.monotonic()
            first_save = False
        if stopped:
            break
    if out is not None and not stopped:
        save_checkpoint(out, state)
    model.eval()
    state.ema.copy_to(model)
    return TrainedModel(
        config=cfg,
        process=state.process,
        param=state.param,
        tables=tables,
        network=model,
        normaliser=state.normaliser,
        data=state.data,
        step=state.step,
        loss_history=state.loss_history,
    )

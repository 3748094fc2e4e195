"""Training learned scores: see :mod:`nonrev.training.loop`."""

from nonrev.training.loop import (
    EMA,
    CheckpointError,
    TrainConfig,
    TrainedModel,
    load_checkpoint,
    process_from_spec,
    quick_config,
    train,
)

__all__ = [
    "CheckpointError",
    "EMA",
    "TrainConfig",
    "TrainedModel",
    "load_checkpoint",
    "process_from_spec",
    "quick_config",
    "train",
]

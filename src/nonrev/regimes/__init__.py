"""Speciation and collapse: predicted by theory (:mod:`.theory`)."""

from .theory import (
    class_covariances,
    collapse_entropy_gap,
    collapse_snr_spectrum,
    collapse_time,
    collapse_time_from_data,
    isotropic_collapse_time,
    predict_regimes,
    speciation_snr,
    speciation_time,
    speciation_time_from_data,
)

__all__ = [
    "class_covariances",
    "collapse_entropy_gap",
    "collapse_snr_spectrum",
    "collapse_time",
    "collapse_time_from_data",
    "isotropic_collapse_time",
    "predict_regimes",
    "speciation_snr",
    "speciation_time",
    "speciation_time_from_data",
]

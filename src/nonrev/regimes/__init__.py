"""Speciation and collapse: predicted by theory (:mod:`.theory`) and measured in the
reverse dynamics (:mod:`.measure`)."""

from .measure import (
    clone_agreement,
    collapse_lock_times,
    excess_entropy,
    memorised_fraction,
    speciation_threshold,
    speciation_time_measured,
)
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
    "clone_agreement",
    "collapse_lock_times",
    "excess_entropy",
    "memorised_fraction",
    "speciation_threshold",
    "speciation_time_measured",
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

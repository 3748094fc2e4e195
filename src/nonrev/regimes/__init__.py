"""Speciation and collapse: predicted by theory (:mod:`.theory`, on the criteria of
:mod:`.criteria`; at finite N by :mod:`.finite`), measured in the reverse dynamics
(:mod:`.measure`), and steered by the choice of Q (:mod:`.steering`)."""

from nonrev.regimes.analyze import predict_regimes
from nonrev.regimes.finite import collapse_time_finite, finite_lock_times
from nonrev.regimes.measure import (
    clone_agreement,
    collapse_lock_times,
    excess_entropy,
    memorised_fraction,
    speciation_threshold,
    speciation_time_measured,
)
from nonrev.regimes.steering import OBJECTIVES, steer_q
from nonrev.regimes.theory import (
    class_covariance_blocks,
    class_covariances,
    collapse_entropy_gap,
    collapse_snr_spectrum,
    collapse_time,
    collapse_time_from_data,
    covariance_blocks,
    isotropic_collapse_time,
    speciation_snr,
    speciation_time,
    speciation_time_from_data,
)

__all__ = [
    "OBJECTIVES",
    "steer_q",
    "clone_agreement",
    "collapse_lock_times",
    "excess_entropy",
    "memorised_fraction",
    "speciation_threshold",
    "speciation_time_measured",
    "class_covariance_blocks",
    "class_covariances",
    "collapse_entropy_gap",
    "collapse_snr_spectrum",
    "collapse_time",
    "collapse_time_from_data",
    "collapse_time_finite",
    "covariance_blocks",
    "finite_lock_times",
    "isotropic_collapse_time",
    "predict_regimes",
    "speciation_snr",
    "speciation_time",
    "speciation_time_from_data",
]

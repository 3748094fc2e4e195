import numpy as np
import pytest

from nonrev.process.schedules import CosineVP, LinearVP


def test_linear_vp_matches_ddpm_alpha_bar():
    s = LinearVP(0.1, 20.0)
    tau = np.linspace(0, 1, 11)
    # DDPM: alpha_bar = exp(-int beta_vp); for U = I, alpha_bar = e^{-2t}
    alpha_bar = np.exp(-(0.1 * tau + 0.5 * 19.9 * tau**2))
    np.testing.assert_allclose(np.exp(-2 * s(tau)), alpha_bar, rtol=1e-12)
    np.testing.assert_allclose(s.inverse(s(tau)), tau, atol=1e-12)
    h = 1e-6
    np.testing.assert_allclose(s.rate(0.5), (s(0.5 + h) - s(0.5 - h)) / (2 * h), rtol=1e-6)


def test_cosine_roundtrip_and_grid():
    s = CosineVP()
    tau = np.linspace(0, 0.99, 7)
    np.testing.assert_allclose(s.inverse(s(tau)), tau, atol=1e-10)
    assert s(0.0) == pytest.approx(0.0, abs=1e-12)
    g = s.grid(10)
    assert g.shape == (11,) and np.all(np.diff(g) > 0)
    h = 1e-6
    np.testing.assert_allclose(s.rate(0.5), (s(0.5 + h) - s(0.5 - h)) / (2 * h), rtol=1e-5)


def test_bad_schedule_input():
    with pytest.raises(ValueError, match="tau must lie"):
        LinearVP()(1.5)
    with pytest.raises(ValueError, match="beta_min"):
        LinearVP(beta_min=-1)
    with pytest.raises(ValueError, match="steps"):
        LinearVP().grid(0)

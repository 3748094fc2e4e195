"""The regime predictions (t_S, t_C) of a SpectralProcess, worked in its blocks: equal to
those of its dense twin (process.dense()) when the covariances are block-diagonal in the
basis, bounds on them when they are not, refused covariances named, and predict_regimes
from data through processes=."""

import numpy as np
import pytest

from nonrev.linalg import sample_covariance
from nonrev.process import OUProcess, SpectralProcess
from nonrev.process.currents import optimal_q
from nonrev.process.spectral import DCTBasis, GroupedBasis
from nonrev.regimes import (
    class_covariance_blocks,
    class_covariances,
    collapse_entropy_gap,
    collapse_snr_spectrum,
    collapse_time,
    collapse_time_from_data,
    covariance_blocks,
    criteria,
    predict_regimes,
    speciation_snr,
    speciation_time,
    speciation_time_from_data,
)

REL = 1e-8


def _rel(a, b):
    return abs(a - b) / abs(b)


def _spd_blocks(m, g, rng, scale=1.0):
    A = rng.standard_normal((m, g, g))
    return scale * (A @ np.swapaxes(A, 1, 2) + 0.05 * np.eye(g))


def _process(shape, current, rng, groups=None):
    u = np.exp(rng.uniform(-2.5, 1.5, shape))
    return SpectralProcess(shape, u, current=current, groups=groups)


def _smooth_images(n, shape, rng):
    """Images with strongly correlated pixels (a covariance far from block-diagonal in
    the DCT basis: cumulative sums are not stationary)."""
    return rng.standard_normal((n, *shape)).cumsum(-1).cumsum(-2) / shape[-1]


# ----------------------------------------------------------------------------- dense twin
@pytest.mark.parametrize(
    "shape, current, groups",
    [
        ((1, 8, 8), "none", None),
        ((1, 8, 8), "optimal", None),
        ((1, 8, 8), "optimal", 4),
        ((1, 16, 16), "none", None),
        ((1, 16, 16), "optimal", None),
    ],
)
def test_times_equal_those_of_the_dense_twin(shape, current, groups, rng):
    sp = _process(shape, current, rng, groups)
    dn = sp.dense()
    m, g = sp.basis.blocks
    Cb, Cw, C = _spd_blocks(m, g, rng, 3.0), _spd_blocks(m, g, rng, 0.3), _spd_blocks(m, g, rng)
    Cb[0] = 0.0  # a block without class separation: it takes no part in r(t)
    Cbd, Cwd, Cd = (sp.basis.dense_np(x) for x in (Cb, Cw, C))

    t_s = speciation_time(sp, Cbd, Cwd)
    assert t_s > 0
    assert _rel(t_s, speciation_time(dn, Cbd, Cwd)) < REL
    assert _rel(speciation_time(sp, Cb, Cw), t_s) < 1e-12  # blocks given directly
    assert _rel(speciation_time(sp, Cbd), speciation_time(dn, Cbd)) < REL  # C_w = 0

    t_c = collapse_time(sp, Cd, 500)
    assert _rel(t_c, collapse_time(dn, Cd, 500)) < REL
    assert _rel(collapse_time(sp, C, 500), t_c) < 1e-12


def test_curves_equal_those_of_the_dense_twin(rng):
    sp = _process((1, 8, 8), "optimal", rng)
    dn = sp.dense()
    m, g = sp.basis.blocks
    Cb, Cw, C = _spd_blocks(m, g, rng, 3.0), _spd_blocks(m, g, rng, 0.3), _spd_blocks(m, g, rng)
    Cbd, Cwd, Cd = (sp.basis.dense_np(x) for x in (Cb, Cw, C))
    times = [0.01, 0.3, 2.0]
    s, sd = collapse_snr_spectrum(sp, C, times), collapse_snr_spectrum(dn, Cd, times)
    assert s.shape == (3, sp.dim)
    assert np.all(np.diff(s, axis=1) <= 0)  # descending, as the dense spectrum
    np.testing.assert_allclose(s, sd, rtol=1e-9, atol=1e-12 * sd.max())
    np.testing.assert_allclose(
        collapse_entropy_gap(sp, C, times), collapse_entropy_gap(dn, Cd, times), rtol=1e-10
    )
    np.testing.assert_allclose(
        speciation_snr(sp, Cb, Cw, times), speciation_snr(dn, Cbd, Cwd, times), rtol=1e-10
    )


def test_both_block_routes_agree_and_are_chosen_as_in_the_dense_frame(rng):
    """Q = 0 takes the commuting route (no matrix exponential), the optimal current
    the general one (pair_blocks); forcing the general route changes nothing."""
    m_g = None
    for current, commuting in (("none", True), ("optimal", False)):
        sp = _process((1, 8, 8), current, rng)
        m_g = sp.basis.blocks
        fast, general = criteria.block_frame(sp), criteria.block_frame(sp, False)
        assert (fast.eigvals is not None) == commuting and general.eigvals is None
        Cb, Cw = _spd_blocks(*m_g, rng, 3.0), _spd_blocks(*m_g, rng, 0.3)
        for t in (1e-3, 0.5, 4.0):
            a = criteria.speciation_ratio(fast, Cb, Cw)(t)
            b = criteria.speciation_ratio(general, Cb, Cw)(t)
            assert _rel(a, b) < 1e-10
            a = criteria.collapse_gap(fast, Cw)(t)
            b = criteria.collapse_gap(general, Cw)(t)
            assert _rel(a, b) < 1e-10


def test_isotropic_u_with_a_current_takes_the_scalar_route(rng):
    shape = (1, 8, 8)
    d = 64
    B = rng.standard_normal((d // 2, 2, 2))
    sp = SpectralProcess(shape, np.full(shape, 0.7), current=B - np.swapaxes(B, 1, 2))
    assert criteria.block_frame(sp).isotropic
    dn = sp.dense()
    C = _spd_blocks(d // 2, 2, rng)
    Cd = sp.basis.dense_np(C)
    assert _rel(collapse_time(sp, C, 1000), collapse_time(dn, Cd, 1000)) < REL
    assert _rel(speciation_time(sp, 4.0 * C), speciation_time(dn, 4.0 * Cd)) < REL


# ----------------------------------------------------------------------------- bad input
def test_covariances_that_are_not_block_diagonal_are_refused_by_name(rng):
    sp = _process((1, 8, 8), "optimal", rng)
    m, g = sp.basis.blocks
    A = rng.standard_normal((64, 64))
    full = A @ A.T / 64  # mixes every frequency with every other
    ok = sp.basis.dense_np(_spd_blocks(m, g, rng))
    with pytest.raises(ValueError, match="between_cov is not block-diagonal"):
        speciation_time(sp, full)
    with pytest.raises(ValueError, match="within_cov is not block-diagonal"):
        speciation_time(sp, ok, full)
    with pytest.raises(ValueError, match="data_cov is not block-diagonal"):
        collapse_time(sp, full, 100)
    with pytest.raises(ValueError, match="data_cov is not block-diagonal"):
        collapse_entropy_gap(sp, full, 1.0)
    with pytest.raises(
        ValueError,
        match=r"data_cov must be a \(64, 64\) matrix or its "
        r"\(32, 2, 2\) blocks",
    ):
        collapse_time(sp, np.ones((16, 4, 4)), 100)
    bad = _spd_blocks(m, g, rng)
    bad[3] = -np.eye(g)
    with pytest.raises(ValueError, match="between_cov must be positive semi-definite"):
        speciation_time(sp, bad)
    asym = _spd_blocks(m, g, rng)
    asym[1, 0, 1] += 1.0
    with pytest.raises(ValueError, match="data_cov must be symmetric"):
        collapse_time(sp, asym, 100)
    with pytest.raises(ValueError, match="data_cov contains NaN"):
        collapse_time(sp, np.full((m, g, g), np.nan), 100)
    with pytest.raises(ValueError, match="process must be an OUProcess or a kernel"):
        collapse_time(object(), ok, 100)


# ----------------------------------------------------------------------------- from data
def test_covariance_blocks_are_the_blocks_of_the_rotated_covariance(rng):
    shape = (1, 8, 8)
    sp = _process(shape, "optimal", rng, groups=4)
    X = _smooth_images(120, shape, rng).reshape(120, -1)
    labels = rng.integers(0, 3, 120)
    X[labels == 2] += 0.4
    V = sp.dct.matrix()
    G = sp.groups

    def blocks_of(C):
        W = V @ C @ V.T
        return np.stack([W[np.ix_(grp, grp)] for grp in G])

    C = sample_covariance(X)
    np.testing.assert_allclose(
        covariance_blocks(sp, X), blocks_of(C), rtol=0, atol=1e-12 * np.abs(C).max()
    )
    Cb, Cw, w = class_covariance_blocks(sp, X, labels)
    Cbd, Cwd, wd = class_covariances(X, labels)
    np.testing.assert_array_equal(w, wd)
    np.testing.assert_allclose(Cb, blocks_of(Cbd), rtol=0, atol=1e-12 * np.abs(C).max())
    np.testing.assert_allclose(Cw, blocks_of(Cwd), rtol=0, atol=1e-12 * np.abs(C).max())


def test_from_data_uses_the_block_part_which_bounds_the_full_covariance(rng):
    """On data whose covariance is not block-diagonal in the basis the block part gives
    t_C no smaller and t_S no larger than the full covariance under the dense twin
    (Fischer's inequality; a Rayleigh quotient restricted to one block), and exactly
    the dense twin's times on the block part itself."""
    shape = (1, 8, 8)
    X = _smooth_images(400, shape, rng).reshape(400, -1)
    labels = np.repeat([0, 1], 200)
    X[labels == 1] += 2.0 * rng.standard_normal(64)
    for current in ("none", "optimal"):
        sp = SpectralProcess.from_data(X.reshape(-1, *shape), k=1e3, current=current)
        dn = sp.dense()
        t_c = collapse_time_from_data(sp, X)
        t_c_full = collapse_time_from_data(dn, X)
        assert t_c >= t_c_full * (1 - 1e-10)
        assert t_c > 1.01 * t_c_full  # the dropped correlations matter on these data
        C = covariance_blocks(sp, X)
        assert _rel(t_c, collapse_time(dn, sp.basis.dense_np(C), 400)) < REL

        t_s = speciation_time_from_data(sp, X, labels)
        t_s_full = speciation_time_from_data(dn, X, labels)
        assert 0 < t_s <= t_s_full * (1 + 1e-10)
        Cb, Cw, _ = class_covariance_blocks(sp, X, labels)
        ref = speciation_time(dn, sp.basis.dense_np(Cb), sp.basis.dense_np(Cw))
        assert _rel(t_s, ref) < REL


# ----------------------------------------------------------------------------- predict_regimes
def test_predict_regimes_with_dense_processes_equals_the_u_currents_call(rng):
    d = 6
    X = rng.standard_normal((80, d)) * np.linspace(0.5, 2.0, d)
    labels = np.repeat([0, 1], 40)
    X[labels == 1, 0] += 3.0
    U = np.diag(np.linspace(0.3, 2.0, d))
    Q = optimal_q(U)
    old = predict_regimes(X, U, {"none": None, "optimal": Q}, labels=labels)
    new = predict_regimes(
        X, processes={"none": OUProcess(U), "optimal": OUProcess(U, Q)}, labels=labels
    )
    assert new == old


def test_predict_regimes_with_spectral_processes(rng):
    shape = (1, 8, 8)
    imgs = _smooth_images(300, shape, rng)
    X = imgs.reshape(300, -1)
    labels = np.repeat([0, 1], 150)
    X[labels == 1] += 1.5 * rng.standard_normal(64)
    procs = {c: SpectralProcess.from_data(imgs, k=100, current=c) for c in ("none", "optimal")}
    out = predict_regimes(X, processes=procs, labels=labels, n_train=1000)
    assert out["n"] == 300 and out["d"] == 64 and out["n_train"] == 1000
    assert out["classes"] == 2 and out["covariance"]["part"] == "blocks"
    sp = procs["none"]
    assert out["rates"]["reversible"] == pytest.approx(sp.u.min(), rel=1e-12)
    assert out["rates"]["bound"] == pytest.approx(1.0, rel=1e-12)
    Cb, Cw, _ = class_covariance_blocks(sp, X, labels)
    C = covariance_blocks(sp, X)
    lam = np.linalg.eigvalsh(C).reshape(-1)
    assert out["covariance"]["max"] == pytest.approx(lam.max(), rel=1e-12)
    for name, proc in procs.items():
        dn = proc.dense()
        assert out["rates"][name] == pytest.approx(dn.relaxation_rate(), rel=1e-10)
        assert _rel(out["collapse"][name], collapse_time(dn, proc.basis.dense_np(C), 1000)) < REL
        ref = speciation_time(dn, proc.basis.dense_np(Cb), proc.basis.dense_np(Cw))
        assert ref > 0 and _rel(out["speciation"][name], ref) < REL


def test_predict_regimes_refuses_bad_process_arguments(rng):
    shape = (1, 4, 4)
    imgs = _smooth_images(40, shape, rng)
    X = imgs.reshape(40, -1)
    sp = SpectralProcess.from_data(imgs, current="optimal")
    with pytest.raises(ValueError, match="either U and currents, or processes"):
        predict_regimes(X, np.eye(16), {"none": None}, processes={"a": sp})
    with pytest.raises(ValueError, match="U and currents are required"):
        predict_regimes(X)
    with pytest.raises(ValueError, match="processes must be a non-empty dict"):
        predict_regimes(X, processes={})
    with pytest.raises(ValueError, match=r"processes\['a'\] has dimension 16 but X has d = 15"):
        predict_regimes(X[:, :15], processes={"a": sp})
    with pytest.raises(ValueError, match=r"processes\['b'\] must be an OUProcess"):
        predict_regimes(X, processes={"a": sp, "b": "optimal"})
    other = SpectralProcess(shape, 2.0 * sp.u, current="none")
    with pytest.raises(ValueError, match="processes must share one U"):
        predict_regimes(X, processes={"a": sp, "b": other})
    with pytest.raises(ValueError, match="finite_n: the finite-N prediction needs a dense"):
        predict_regimes(X, processes={"a": sp}, finite_n=True)


# ----------------------------------------------------------------------------- image scale
def test_32x32_from_data_in_blocks_only(rng, monkeypatch):
    """d = 1024: the whole path runs in the blocks (the dense basis, the dense blocks and
    to_blocks are made to fail), and each time satisfies its criterion."""
    shape = (1, 32, 32)
    imgs = _smooth_images(300, shape, rng)
    X = imgs.reshape(300, -1)
    labels = np.repeat([0, 1], 150)
    X[labels == 1] += 1.5 * rng.standard_normal(1024) / 32
    sp = SpectralProcess.from_data(imgs, k=1e3, current="optimal")

    def refuse(*args, **kwargs):
        raise AssertionError("a d x d matrix was built")

    monkeypatch.setattr(DCTBasis, "matrix", refuse)
    monkeypatch.setattr(GroupedBasis, "dense_np", refuse)
    monkeypatch.setattr(SpectralProcess, "to_blocks", refuse)
    t_c = collapse_time_from_data(sp, X)
    C = covariance_blocks(sp, X)
    assert collapse_entropy_gap(sp, C, t_c) == pytest.approx(np.log(300), rel=1e-6)
    t_s = speciation_time_from_data(sp, X, labels)
    Cb, Cw, _ = class_covariance_blocks(sp, X, labels)
    assert t_s > 0
    assert speciation_snr(sp, Cb, Cw, t_s) == pytest.approx(1.0, rel=1e-6)
    out = predict_regimes(X, processes={"optimal": sp}, labels=labels)
    assert out["collapse"]["optimal"] == t_c and out["speciation"]["optimal"] == t_s


def test_32x32_collapse_equals_the_dense_twin_without_current(rng):
    shape = (1, 32, 32)
    imgs = _smooth_images(200, shape, rng)
    sp = SpectralProcess.from_data(imgs, k=1e3)
    C = covariance_blocks(sp, imgs.reshape(200, -1))
    assert (
        _rel(collapse_time(sp, C, 200), collapse_time(sp.dense(), sp.basis.dense_np(C), 200)) < REL
    )

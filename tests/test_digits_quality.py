"""The Frechet distance (closed forms) and the digits quality metric (real-vs-real)."""

import numpy as np
import pytest
import scipy.linalg
from problems import random_spd

from nonrev.metrics import frechet_distance, frechet_distance_gaussian


def test_frechet_gaussian_closed_form_for_commuting_covariances(rng):
    d = 6
    _, V, _ = random_spd(d, rng)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance_gaussian(m1, (V * a) @ V.T, m2, (V * b) @ V.T)
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert got == pytest.approx(want, rel=1e-10)


def test_frechet_gaussian_against_scipy_sqrtm_and_symmetry(rng):
    d = 7
    C1, _, _ = random_spd(d, rng, 0.05, 4.0, geometric=True)
    C2, _, _ = random_spd(d, rng, 0.2, 2.0)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = np.sum((m1 - m2) ** 2) + np.trace(C1 + C2 - 2 * scipy.linalg.sqrtm(C1 @ C2).real)
    assert frechet_distance_gaussian(m1, C1, m2, C2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_gaussian(m2, C2, m1, C1) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_gaussian(m1, C1, m1, C1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_of_samples_converges_to_the_gaussian_value(rng):
    d = 3
    C1, C2 = np.diag([1.0, 2.0, 0.5]), np.diag([2.0, 1.0, 0.5])
    x = rng.multivariate_normal(np.zeros(d), C1, size=200_000)
    y = rng.multivariate_normal(np.ones(d), C2, size=200_000)
    want = frechet_distance_gaussian(np.zeros(d), C1, np.ones(d), C2)
    assert frechet_distance(x, y) == pytest.approx(want, rel=0.02)


def test_frechet_distance_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="cov_y"):
        frechet_distance_gaussian(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


@pytest.fixture(scope="module")
def digits():
    from nonrev.data.datasets import load_dataset
    from nonrev.experiments.digits_quality import DigitsClassifier

    ds = load_dataset("digits")
    return ds, DigitsClassifier(ds.train, ds.train_labels)


def test_digits_classifier_is_accurate_and_reproducible(digits):
    from nonrev.experiments.digits_quality import DigitsClassifier

    ds, clf = digits
    assert (clf.predict(ds.test) == ds.test_labels).mean() > 0.95
    again = DigitsClassifier(ds.train, ds.train_labels)
    assert np.array_equal(again.features(ds.test[:50]), clf.features(ds.test[:50]))


def test_digits_frechet_separates_real_from_gaussian_digits(digits):
    """Real training digits against the test set score well below noisy digits and
    samples of the data's Gaussian fit (measured with the default classifier over 12
    subsets: real 1.66 +- 0.57, at most 3.0; noisy 4.2; Gaussian 5.3)."""
    from nonrev.experiments.digits_quality import digits_quality

    ds, clf = digits
    rng = np.random.default_rng(0)
    n = len(ds.test)
    real = [
        digits_quality(ds.train[rng.permutation(len(ds.train))[:n]], ds.test, clf)["frechet"]
        for _ in range(6)
    ]
    gauss = rng.multivariate_normal(ds.train.mean(0), np.cov(ds.train, rowvar=False), size=n)
    noisy = ds.train[:n] + rng.normal(0.0, 2.0, (n, ds.train.shape[1]))
    fd_gauss = digits_quality(gauss.clip(0, 16), ds.test, clf)["frechet"]
    fd_noisy = digits_quality(noisy.clip(0, 16), ds.test, clf)["frechet"]
    assert np.mean(real) < 0.6 * fd_noisy and fd_noisy < fd_gauss and max(real) < fd_gauss
    assert np.std(real) < 0.5 * np.mean(real)  # the noise floor of a 359-image test set
    q = digits_quality(ds.train[:n], ds.test, clf)
    assert q["confidence"] > 0.9 and q["class_tv"] < 0.1

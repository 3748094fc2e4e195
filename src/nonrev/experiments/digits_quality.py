"""Sample quality on 8x8 digits in the terms users of image models know: the FID
recipe on digits.

:class:`DigitsClassifier` is a small MLP (64 -> 128 -> 16 -> 10, ReLU) trained on the
training split with a fixed seed, full batch, in float64, so the same data give the
same network and numbers from different runs compare. Its 16 penultimate
activations are the feature space of the *digits Frechet distance*
(:func:`nonrev.metrics.frechet_distance` between the features of the samples and of
the held-out test set); its class probabilities give the classifier confidence and the
class balance of a sample set.

The test set is small (359 images), so the distance has a noise floor: subsets of
real training digits of the same size score about 1.7 +- 0.6, noisy digits (pixel
noise of sd 2) about 4, samples of the data's Gaussian fit about 5
(tests/test_digits_quality.py). Compare settings with several seeds.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.metrics import frechet_distance

__all__ = ["DigitsClassifier", "digits_quality"]

#: Pixels of scikit-learn's digits run from 0 to 16.
_PIXEL_MAX = 16.0


class DigitsClassifier:
    """An MLP classifier of 8x8 digits (pixels in 0..16) with fixed, seeded training.

    ``X`` (n, 64) training images, ``y`` (n,) integer labels 0..K-1. ``epochs`` full-
    batch AdamW steps (learning rate ``lr``, weight decay ``weight_decay``) from an
    initialisation drawn with ``seed``; the global torch random state is left as it
    was.
    """

    def __init__(
        self,
        X,
        y,
        *,
        seed: int = 0,
        hidden: int = 128,
        features: int = 16,
        epochs: int = 200,
        lr: float = 3e-3,
        weight_decay: float = 1.0,
    ):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] < 2:
            raise ValueError(
                f"X must be (n, d) with one label per row in y; got X {X.shape} and y {y.shape}"
            )
        if y.dtype.kind not in "iu" or y.min() < 0:
            raise ValueError("y must hold non-negative integer class labels")
        self.n_classes = int(y.max()) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = torch.nn.Sequential(
                torch.nn.Linear(X.shape[1], hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, features),
                torch.nn.ReLU(),
            ).double()
            self.head = torch.nn.Linear(features, self.n_classes).double()
        params = list(self.body.parameters()) + list(self.head.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        xt, yt = self._input(X), torch.as_tensor(y, dtype=torch.long)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.head(self.body(xt)), yt)
            loss.backward()
            opt.step()
        self.train_loss = float(loss.detach())

    @staticmethod
    def _input(X) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X, dtype=np.float64) / _PIXEL_MAX)

    @torch.no_grad()
    def features(self, X) -> np.ndarray:
        """The penultimate activations (n, features) of images ``X``."""
        return self.body(self._input(X)).numpy()

    @torch.no_grad()
    def proba(self, X) -> np.ndarray:
        """Class probabilities (n, K)."""
        return torch.softmax(self.head(self.body(self._input(X))), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """Most likely class of each image."""
        return self.proba(X).argmax(1)


def digits_quality(samples, reference, clf: DigitsClassifier, reference_freq=None) -> dict:
    """Quality of ``samples`` against ``reference`` (both (n, 64) images in pixel units):
    ``frechet`` (digits Frechet distance in ``clf``'s features), ``confidence`` (mean
    top class probability), ``class_freq``, and ``class_tv`` (total variation to
    ``reference_freq``, default the classifier's class frequencies on ``reference``)."""
    p = clf.proba(samples)
    freq = np.bincount(p.argmax(1), minlength=clf.n_classes) / len(p)
    if reference_freq is None:
        reference_freq = np.bincount(clf.predict(reference), minlength=clf.n_classes) / len(
            reference
        )
    return {
        "frechet": frechet_distance(clf.features(samples), clf.features(reference)),
        "confidence": float(p.max(1).mean()),
        "class_freq": freq.tolist(),
        "class_tv": float(0.5 * np.abs(freq - np.asarray(reference_freq)).sum()),
    }

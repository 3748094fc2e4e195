"""Training data for learned scores: bundled real data, 2-D toy sets, user arrays and
folders of images; a seeded train/test split; and the normalisation that maps data
to the units the process works in (and back).

Sources (:func:`load_dataset`):

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, pixel values
  0..16, labels 0..9), shipped inside the scikit-learn package: no download.
  Image shape (1, 8, 8).
* ``patches``: ``n_points`` grayscale ``image_size``-square crops of the two photos
  that ship with scikit-learn (``sklearn.datasets.load_sample_images``, 427 x 640;
  the mean of R, G, B; the photos alternate, positions uniform from ``split_seed``):
  :func:`photo_patches`. Pixel values 0..255, image shape (1, s, s). Natural-image
  statistics (a power spectrum falling over decades) with no download.
* ``moons``, ``circles``, ``ring``: 2-D toy sets generated from a seed
  (``sklearn.datasets.make_moons`` / ``make_circles`` with noise 0.05; ``ring``:
  8 Gaussians of standard deviation 0.1 on the unit circle, scaled by 2), with labels.
* a ``.npy`` / ``.npz`` file: ``(n, d)`` vectors, ``(n, H, W)`` grayscale images,
  or ``(n, C, H, W)`` / ``(n, H, W, C)`` images with ``C`` in {1, 3}.
* a folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp; read with
  Pillow), converted to grayscale or RGB and resized to ``image_size`` square
  (bilinear). Pixel values 0..255.

Arrays hold one sample per row, float64, in the source's units. The split is a
permutation from ``split_seed``: the first ``round(test_fraction n)`` rows are the
test set. :class:`Normaliser` is ``x -> (x - mean) / scale`` with the per-feature
training mean and one scalar ``scale = sqrt(Tr(C) / d)`` (``C`` the training
covariance), so normalised data have ``Tr(C)/d = 1`` (the total variance of the
standard noise law ``N(0, I)``) and keep the covariance's shape, which
``u_from_data`` needs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nonrev.data.files import _read
from nonrev.linalg import as_samples

__all__ = [
    "BUNDLED",
    "photo_patches",
    "Dataset",
    "Normaliser",
    "IMAGE_SUFFIXES",
    "load_dataset",
    "to_source_layout",
    "write_image_grid",
]

BUNDLED = ("digits", "patches", "moons", "circles", "ring")


def photo_patches(n: int, size: int, seed: int, color: str = "gray") -> np.ndarray:
    """``n`` ``size``-square crops (n, C, size, size), float64 in 0..255, of the two
    scikit-learn sample photos: ``color="gray"`` (C = 1, the mean of R, G, B) or
    ``"rgb"`` (C = 3); alternating between the photos, top-left corners uniform from
    ``seed``."""
    from sklearn.datasets import load_sample_images

    n, size = int(n), int(size)
    if color not in ("gray", "rgb"):
        raise ValueError(f"color must be gray or rgb, got {color!r}")
    photos = [
        im.astype(np.float64).mean(axis=-1, keepdims=True) if color == "gray" else im
        for im in load_sample_images().images
    ]
    side = min(min(im.shape[:2]) for im in photos)
    if not 1 <= size <= side:
        raise ValueError(f"patch size must be between 1 and {side} pixels, got {size}")
    if n < 1:
        raise ValueError(f"the number of patches must be >= 1, got {n}")
    rng = np.random.default_rng(int(seed))
    out = np.empty((n, photos[0].shape[-1], size, size))
    for i in range(n):
        im = photos[i % len(photos)]
        r = rng.integers(0, im.shape[0] - size + 1)
        c = rng.integers(0, im.shape[1] - size + 1)
        out[i] = np.moveaxis(im[r : r + size, c : c + size], -1, 0)
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Dataset:
    """A train/test split in the source's units.

    ``train``, ``test``: (n, d) float64. ``train_labels``, ``test_labels``: int
    arrays or None. ``shape``: (C, H, W) for images, None for vectors.
    ``sample_shape``: the per-sample shape of the source array (how samples are
    written back), ``channels_last``: source images were (H, W, C).
    ``value_range``: (low, high) of valid values (images) or None. ``source``: a
    JSON-able description (name, path and sha256 of a file or folder, split seed).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    shape: tuple | None
    sample_shape: tuple
    value_range: tuple | None
    source: dict = field(default_factory=dict)
    channels_last: bool = False

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def to_source_layout(self, x: np.ndarray) -> np.ndarray:
        """(n, d) rows -> (n, *sample_shape), the layout of the source data."""
        return to_source_layout(x, self.shape, self.sample_shape, self.channels_last)


def to_source_layout(x, shape, sample_shape, channels_last: bool = False) -> np.ndarray:
    """(n, d) rows -> (n, *sample_shape); channel-last images go back from (C, H, W)."""
    x = np.asarray(x)
    if channels_last and shape is not None:
        return x.reshape(-1, *shape).transpose(0, 2, 3, 1)
    return x.reshape(-1, *sample_shape)


@dataclass
class Normaliser:
    """``x -> (x - mean) / scale`` (per-feature mean, one scalar scale), and back."""

    mean: np.ndarray
    scale: float

    @classmethod
    def fit(cls, X) -> "Normaliser":
        """Training mean and ``scale = sqrt(Tr(C)/d)`` (1 if the data are constant)."""
        X = as_samples("X", X)
        mean = X.mean(axis=0)
        scale = float(np.sqrt(np.mean((X - mean) ** 2)))
        return cls(mean, scale if scale > 0 else 1.0)

    def forward(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def inverse(self, z):
        return np.asarray(z, dtype=np.float64) * self.scale + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict, dim: int) -> "Normaliser":
        mean = np.asarray(d["mean"], dtype=np.float64)
        scale = float(d["scale"])
        if mean.shape != (dim,) or not np.all(np.isfinite(mean)):
            raise ValueError(f"normalisation mean must be {dim} finite numbers")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"normalisation scale must be finite and positive, got {scale}")
        return cls(mean, scale)


# ---------------------------------------------------------------------------- sources
def _toy(name: str, n: int, seed: int):
    from sklearn.datasets import make_circles, make_moons

    if name == "moons":
        return make_moons(n_samples=n, noise=0.05, random_state=seed)
    if name == "circles":
        return make_circles(n_samples=n, noise=0.05, factor=0.5, random_state=seed)
    rng = np.random.default_rng(seed)  # ring: 8 Gaussians on the circle of radius 2
    k = rng.integers(0, 8, size=n)
    angle = 2 * np.pi * k / 8
    X = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.1 * rng.standard_normal((n, 2))
    return X, k


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _load_folder(folder: Path, image_size: int, color: str):
    from PIL import Image, UnidentifiedImageError

    files = _image_files(folder)
    if len(files) < 2:
        raise ValueError(
            f"{folder}: needs at least 2 images ({', '.join(IMAGE_SUFFIXES)}), found {len(files)}"
        )
    images, h = [], hashlib.sha256()
    with_color = color == "rgb"
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                if color == "auto" and im.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                    with_color = True
                images.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            # DecompressionBombError: more pixels than PIL's limit (Image.MAX_IMAGE_PIXELS)
            raise ValueError(
                f"{p}: cannot read the image ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})"
            ) from None
        h.update(str(p.relative_to(folder)).encode() + b"\0" + _sha256_file(p).encode())
    mode = "RGB" if with_color else "L"
    arrs = []
    for im in images:
        im = im.convert(mode).resize((image_size, image_size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float64)
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    X = np.stack(arrs)
    return X.reshape(len(X), -1), tuple(X.shape[1:]), h.hexdigest()


def _array_layout(path: Path, arr: np.ndarray):
    """``(rows (n, d), shape, sample_shape, channels_last)`` of a user array."""
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: non-numeric data (dtype {arr.dtype})")
    n = arr.shape[0] if arr.ndim else 0
    if arr.ndim == 2:
        return arr, None, arr.shape[1:], False
    if arr.ndim == 3:
        return arr.reshape(n, -1), (1, *arr.shape[1:]), arr.shape[1:], False
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            return arr.reshape(n, -1), tuple(arr.shape[1:]), arr.shape[1:], False
        if arr.shape[3] in (1, 3):
            chw = arr.transpose(0, 3, 1, 2)
            return chw.reshape(n, -1), tuple(chw.shape[1:]), arr.shape[1:], True
        raise ValueError(
            f"{path}: a 4-D array must be (n, C, H, W) or (n, H, W, C) with "
            f"C = 1 or 3, got shape {arr.shape}"
        )
    raise ValueError(
        f"{path}: expected (n, d) vectors or (n, H, W) / (n, C, H, W) images, got shape {arr.shape}"
    )


def load_dataset(
    spec: str,
    *,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    n_points: int = 4000,
    image_size: int = 16,
    color: str = "auto",
    key: str | None = None,
) -> Dataset:
    """Load ``spec`` (a name in :data:`BUNDLED`, a .npy/.npz file or a folder of
    images) and split it into train and test sets (see the module docstring).

    ``n_points``: size of a generated 2-D toy set. ``image_size``, ``color``
    (``auto``, ``gray`` or ``rgb``): for folders. ``key``: the array of an .npz.
    Raises ValueError with a one-line message naming the source.
    """
    if not (0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if color not in ("auto", "gray", "rgb"):
        raise ValueError(f"color must be auto, gray or rgb, got {color!r}")
    labels = None
    shape = None
    value_range = None
    channels_last = False
    source: dict = {
        "name": spec,
        "split_seed": int(split_seed),
        "test_fraction": float(test_fraction),
    }
    if spec == "digits":
        from sklearn.datasets import load_digits

        X, labels = load_digits(return_X_y=True)
        shape, sample_shape, value_range = (1, 8, 8), (64,), (0.0, 16.0)
    elif spec == "patches":
        size = int(image_size)
        X = photo_patches(int(n_points), size, int(split_seed)).reshape(int(n_points), -1)
        shape, sample_shape, value_range = (1, size, size), (1, size, size), (0.0, 255.0)
        source.update(n_points=int(n_points), image_size=size)
    elif spec in ("moons", "circles", "ring"):
        X, labels = _toy(spec, int(n_points), int(split_seed))
        sample_shape = (2,)
        source["n_points"] = int(n_points)
    else:
        path = Path(spec)
        if path.is_dir():
            X, shape, digest = _load_folder(path, int(image_size), color)
            sample_shape, value_range = shape, (0.0, 255.0)
            source.update(
                kind="folder",
                path=str(path.resolve()),
                sha256=digest,
                image_size=int(image_size),
                color=color,
            )
        elif path.suffix.lower() in (".npy", ".npz"):
            arr = _read(path, key)
            X, shape, sample_shape, channels_last = _array_layout(path, np.asarray(arr))
            source.update(kind="file", path=str(path.resolve()), sha256=_sha256_file(path), key=key)
        elif not path.exists():
            raise ValueError(
                f"data {spec!r}: not one of {', '.join(BUNDLED)}, and no such file or folder"
            )
        else:
            raise ValueError(f"{spec}: use a .npy or .npz file, or a folder of images")
    try:
        X = as_samples(str(spec), X, min_rows=4, min_cols=1)
    except ValueError as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    n = X.shape[0]
    perm = np.random.default_rng(int(split_seed)).permutation(n)
    n_test = min(max(1, int(round(test_fraction * n))), n - 2)
    test, train = perm[:n_test], perm[n_test:]
    lab = None if labels is None else np.asarray(labels).astype(np.int64)
    return Dataset(
        name=spec,
        train=X[train],
        test=X[test],
        train_labels=None if lab is None else lab[train],
        test_labels=None if lab is None else lab[test],
        shape=shape,
        sample_shape=tuple(int(s) for s in sample_shape),
        value_range=value_range,
        source=source,
        channels_last=channels_last,
    )


# ---------------------------------------------------------------------------- output
def write_image_grid(
    images: np.ndarray,
    shape,
    path,
    *,
    value_range=None,
    ncols: int | None = None,
    upscale: int | None = None,
) -> None:
    """Save up to 100 images (rows of length C H W, source units) as one PNG grid.

    Values are mapped linearly from ``value_range`` (default: the min and max of the
    images) to 0..255 and clipped; small images are upscaled (nearest) to about 32
    pixels a side; a one-pixel gap separates the tiles.
    """
    from PIL import Image

    C, H, W = (int(s) for s in shape)
    x = np.asarray(images, dtype=np.float64).reshape(-1, C, H, W)[:100]
    if x.shape[0] == 0:
        raise ValueError("no images to write")
    lo, hi = (float(x.min()), float(x.max())) if value_range is None else value_range
    x = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    n = x.shape[0]
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    up = upscale or max(1, 32 // max(H, W))
    canvas = np.ones((C, nrows * (H + 1) + 1, ncols * (W + 1) + 1))
    for k in range(n):
        r, c = divmod(k, ncols)
        canvas[:, 1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = x[
            k
        ]
    img = (255 * canvas).round().astype(np.uint8)
    img = img[0] if C == 1 else img.transpose(1, 2, 0)
    pil = Image.fromarray(img)
    pil = pil.resize((pil.width * up, pil.height * up), Image.NEAREST)
    pil.save(path)

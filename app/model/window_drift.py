"""The window drift test: a short signature per request, and a test of a window of them against a reference.

A signature is the vision signal projected on its main axes (PCA fitted on the training images)
next to cheap pixel statistics the embedding may wash out (channel means and spreads, saturation,
contrast). The reference keeps two samples of training signatures: an *index* and a *calibration*
set. A request's novelty is the distance from its signature to its k-th nearest neighbour in the
index, divided by how far those neighbours' own k-th neighbours are (a local outlier ratio: about
1 anywhere inside the training data, however dense, and large outside it); the calibration
signatures' novelty is what in-distribution inputs score. The test asks whether a window's inputs
are more novel than the calibration inputs: a one-sided rank-sum (Mann-Whitney) statistic,
reported as an AUC (0.5: like the training data, 1.0: every input more novel than every training
input), with its p-value. Under no drift the window and the calibration set are exchangeable, so
the false-alarm rate is the level the p-value is compared to.

Why novelty ranks and not a plain two-sample distance (MMD, energy): an adapter trained on clean
and drifted images has a reference that mixes both, and traffic of either kind alone is then a
different *distribution* from the reference (MMD rejects it every poll, so the watchdog would
retrain forever) while it is no *novelty* to the model. The local ratio matters for the same
reason: a raw neighbour distance is larger where the reference is sparser, so a window richer in
the rarer kind would look novel too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WINDOW_REFERENCE_FILE = "window_reference.json"
PIXEL_STATS = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation", "contrast")
DEFAULT_COMPONENTS = 8
DEFAULT_INDEX_SIZE = 1000
DEFAULT_CALIBRATION_SIZE = 1000
DEFAULT_NEIGHBOURS = 5
SMALL_WINDOW = 20  # fewer distinct inputs than this: permutation p-value instead of the normal approximation
PERMUTATIONS = 2000
DECIMALS = 4  # signatures are stored and shipped rounded: 16 short numbers per event
_MIN_SPREAD = 1e-3  # a statistic constant in the training images must not divide by ~0


class WindowDriftError(ValueError):
    """A reference cannot be fitted or read, or a window does not match it; the message says why."""


def pixel_stats(pixel_values: np.ndarray, image_mean: Sequence[float], image_std: Sequence[float]) -> np.ndarray:
    """Per image, from the model's normalised input pixels: the 8 `PIXEL_STATS`.

    `pixel_values` is (images, 3, H, W) as the processor made it; the processor's mean and std undo
    the normalisation. Saturation is HSV's (max - min) / max, averaged over pixels; contrast is the
    spread of the luminance. Greyscale drops saturation to 0, inversion moves the means.
    """
    x = np.asarray(pixel_values, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise WindowDriftError(f"pixel_values must be (images, 3, height, width), got {x.shape}")
    mean = np.asarray(image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(image_std, dtype=np.float32).reshape(1, 3, 1, 1)
    rgb = np.clip(x * std + mean, 0.0, 1.0)
    brightest, darkest = rgb.max(axis=1), rgb.min(axis=1)
    saturation = ((brightest - darkest) / np.maximum(brightest, 1e-6)).mean(axis=(1, 2))
    luminance = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    return np.concatenate([rgb.mean(axis=(2, 3)), rgb.std(axis=(2, 3)), saturation[:, None],
                           luminance.std(axis=(1, 2))[:, None]], axis=1)


@dataclass(frozen=True)
class WindowTest:
    """One window tested against the reference."""

    statistic: float  # novelty AUC: P(a window input is more novel than a calibration input)
    p_value: float
    window_size: int  # distinct signatures tested (repeats of one image count once)
    reference_size: int  # calibration signatures
    method: str  # "normal" (approximation) or "permutation"

    def rejects(self, alpha: float) -> bool:
        return self.p_value <= alpha


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as the rank-sum test counts them)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(counts) < len(values):
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return ranks


def rank_sum_test(window: np.ndarray, calibration: np.ndarray, *, method: str | None = None,
                  permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float, str]:
    """One-sided Mann-Whitney test that `window` values are larger than `calibration` values.

    Returns (AUC, p-value, method). AUC = U / (n m), Mann-Whitney's U over the product of the sizes.
    From `SMALL_WINDOW` window values up, the p-value is U's normal approximation with tie and
    continuity corrections (scipy.stats.mannwhitneyu's "asymptotic"), which resolves p-values far
    below 1 / permutations; for smaller windows it is a Monte Carlo permutation p-value,
    (1 + #{permuted AUC >= observed}) / (1 + permutations), exact in size. `method` ("normal" or
    "permutation") overrides the choice.
    """
    window, calibration = np.asarray(window, np.float64), np.asarray(calibration, np.float64)
    n, m = len(window), len(calibration)
    if n == 0 or m == 0:
        raise WindowDriftError(f"the rank-sum test needs values on both sides, got {n} and {m}")
    pooled = np.concatenate([window, calibration])
    ranks = _average_ranks(pooled)
    offset = n * (n + 1) / 2.0
    u = ranks[:n].sum() - offset
    auc = u / (n * m)
    method = method or ("normal" if n >= SMALL_WINDOW else "permutation")
    if method == "normal":
        total = n + m
        _, ties = np.unique(pooled, return_counts=True)
        variance = n * m / 12.0 * ((total + 1) - float((ties ** 3 - ties).sum()) / (total * (total - 1)))
        z = (u - n * m / 2.0 - 0.5) / math.sqrt(variance) if variance > 0 else 0.0
        return float(auc), 0.5 * math.erfc(z / math.sqrt(2.0)), "normal"
    rng = np.random.default_rng(seed)
    # Each row of random keys orders the pooled values at random; its n smallest keys are a permuted window.
    chosen = np.argpartition(rng.random((permutations, n + m), dtype=np.float32), n - 1, axis=1)[:, :n]
    null = ranks[chosen].sum(axis=1) - offset
    return float(auc), (1 + int(np.count_nonzero(null >= u - 1e-9))) / (permutations + 1), "permutation"


def _project(signals, stats, signal_mean, signal_std, components, component_std, stats_mean, stats_std) -> np.ndarray:
    signals = np.atleast_2d(np.asarray(signals, np.float64))
    stats = np.atleast_2d(np.asarray(stats, np.float64))
    scores = ((signals - signal_mean) / signal_std) @ np.asarray(components, np.float64).T / component_std
    return np.round(np.concatenate([scores, (stats - stats_mean) / stats_std], axis=1), DECIMALS)


class WindowReference:
    """How to turn a request's vision signal and pixel statistics into a signature, and the reference sample."""

    def __init__(self, *, signal_mean: np.ndarray, signal_std: np.ndarray, components: np.ndarray,
                 component_std: np.ndarray, stats_mean: np.ndarray, stats_std: np.ndarray, index: np.ndarray,
                 calibration: np.ndarray, neighbours: int, count: int):
        self.signal_mean = np.asarray(signal_mean, np.float32)
        self.signal_std = np.asarray(signal_std, np.float32)
        self.components = np.asarray(components, np.float32).reshape(-1, len(self.signal_mean))
        self.component_std = np.asarray(component_std, np.float32)
        self.stats_mean = np.asarray(stats_mean, np.float32)
        self.stats_std = np.asarray(stats_std, np.float32)
        self.index = np.asarray(index, np.float32).reshape(-1, self.dims)
        self.calibration = np.asarray(calibration, np.float32).reshape(-1, self.dims)
        self.neighbours = int(min(neighbours, len(self.index) - 1))
        self.count = int(count)
        if self.neighbours < 1 or len(self.calibration) < 1:
            raise WindowDriftError("a window reference needs at least two index and one calibration signature")
        within = _squared_distances(self.index.astype(np.float64), self.index.astype(np.float64))
        np.fill_diagonal(within, np.inf)
        # Each index signature's own k-th neighbour distance (itself left out): the local scale of the data.
        self._index_radius = np.maximum(np.sqrt(np.partition(within, self.neighbours - 1, axis=1)
                                                [:, self.neighbours - 1]), 1e-6)
        self._calibration_novelty = self.novelty(self.calibration)

    @property
    def dims(self) -> int:
        """Length of a signature: the PCA components, then the pixel statistics."""
        return len(self.components) + len(PIXEL_STATS)

    @classmethod
    def fit(cls, signals: np.ndarray, stats: np.ndarray, *, components: int = DEFAULT_COMPONENTS,
            index_size: int = DEFAULT_INDEX_SIZE, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
            neighbours: int = DEFAULT_NEIGHBOURS, seed: int = 0) -> WindowReference:
        """Fit the projection on all training images, then sample the index and calibration sets from them.

        `signals` is one vision signal per distinct training image, `stats` their `pixel_stats`. With
        fewer images than index + calibration, the images are split half and half.
        """
        signals, stats = np.asarray(signals, np.float64), np.asarray(stats, np.float64)
        if len(signals) != len(stats) or len(signals) < 3:
            raise WindowDriftError(f"need matching signals and pixel stats of 3+ images, got {len(signals)} and "
                                   f"{len(stats)}")
        signal_mean, signal_std = signals.mean(axis=0), np.maximum(signals.std(axis=0), 1e-6)
        z = (signals - signal_mean) / signal_std
        _, singular, axes = np.linalg.svd(z, full_matrices=False)
        k = min(components, len(axes))
        component_std = np.maximum(singular[:k] / np.sqrt(len(z)), 1e-6)
        stats_mean, stats_std = stats.mean(axis=0), np.maximum(stats.std(axis=0), _MIN_SPREAD)
        signatures = _project(signals, stats, signal_mean, signal_std, axes[:k], component_std, stats_mean, stats_std)
        order = np.random.default_rng(seed).permutation(len(signatures))
        if len(order) < index_size + calibration_size:
            index_size = len(order) // 2
            calibration_size = len(order) - index_size
        return cls(signal_mean=signal_mean, signal_std=signal_std, components=axes[:k], component_std=component_std,
                   stats_mean=stats_mean, stats_std=stats_std, index=signatures[order[:index_size]],
                   calibration=signatures[order[index_size:index_size + calibration_size]],
                   neighbours=neighbours, count=len(signals))

    def signatures(self, signals: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """(rows, dims) signatures: whitened PCA scores of the signals, then standardised pixel statistics."""
        return _project(signals, stats, self.signal_mean, self.signal_std, self.components, self.component_std,
                        self.stats_mean, self.stats_std)

    def novelty(self, signatures: np.ndarray) -> np.ndarray:
        """Per signature: its k-th nearest neighbour distance in the index over those neighbours' own."""
        d = _squared_distances(np.asarray(signatures, np.float64), self.index.astype(np.float64))
        nearest = np.argpartition(d, self.neighbours - 1, axis=1)[:, :self.neighbours]
        radius = np.sqrt(np.take_along_axis(d, nearest, axis=1).max(axis=1))
        return radius / self._index_radius[nearest].mean(axis=1)

    def test(self, window: np.ndarray, *, seed: int = 0) -> WindowTest:
        """Test a window of signatures (one per request) against the calibration signatures.

        Identical signatures (the same image asked several questions) count once: repeats are not
        independent draws, and counting them would make the p-value too small.
        """
        window = np.asarray(window, np.float64)
        if window.ndim != 2 or window.shape[1] != self.dims or len(window) == 0:
            raise WindowDriftError(f"a window is (requests, {self.dims}) signatures, got shape {window.shape}")
        distinct = np.unique(np.round(window, DECIMALS), axis=0)
        auc, p_value, method = rank_sum_test(self.novelty(distinct), self._calibration_novelty, seed=seed)
        return WindowTest(statistic=auc, p_value=p_value, window_size=len(distinct),
                          reference_size=len(self.calibration), method=method)

    # --- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def floats(a: np.ndarray) -> list:
            return np.asarray(a, np.float32).tolist()

        return {
            "kind": "local-outlier-ratio-rank-sum", "pixel_stats": list(PIXEL_STATS), "count": self.count,
            "neighbours": self.neighbours,
            "signal_mean": floats(self.signal_mean), "signal_std": floats(self.signal_std),
            "components": floats(self.components), "component_std": floats(self.component_std),
            "stats_mean": floats(self.stats_mean), "stats_std": floats(self.stats_std),
            "index": np.round(self.index.astype(np.float64), DECIMALS).tolist(),
            "calibration": np.round(self.calibration.astype(np.float64), DECIMALS).tolist(),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> WindowReference:
        try:
            return cls(**{key: payload[key] for key in (
                "signal_mean", "signal_std", "components", "component_std", "stats_mean", "stats_std", "index",
                "calibration", "neighbours", "count")})
        except (KeyError, TypeError, ValueError) as exc:
            raise WindowDriftError(f"not a window reference: {exc}") from exc

    def save(self, directory: Path) -> Path:
        path = Path(directory) / WINDOW_REFERENCE_FILE
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, directory: Path) -> WindowReference | None:
        """The reference saved in `directory`, or None if it has none."""
        path = Path(directory) / WINDOW_REFERENCE_FILE
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise WindowDriftError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(payload)

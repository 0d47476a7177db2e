"""The window drift test: its statistic against known cases, its false-alarm rate, what it catches, its file.

Synthetic signatures and images where the answer is known; then the committed small model's signatures
through `VQAModel.answer` (one row per image, whatever the batch) and the service's reference endpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.model.window_drift import (
    PIXEL_STATS,
    SMALL_WINDOW,
    WINDOW_REFERENCE_FILE,
    WindowDriftError,
    WindowReference,
    pixel_stats,
    rank_sum_test,
)
from app.simulation.distortions import greyscale

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def normalised(rgb: np.ndarray) -> np.ndarray:
    """(images, 3, H, W) in [0, 1] as a processor with MEAN and STD would hand them to the model."""
    return (rgb - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))


def colourful_images(rng: np.random.Generator, count: int, *, grey: bool = False) -> np.ndarray:
    """Images of one random colour plus noise (or their grey versions): a stand-in for easy-VQA shapes."""
    colours = rng.uniform(0.1, 0.9, size=(count, 3, 1, 1))
    rgb = np.clip(colours + rng.normal(0, 0.05, size=(count, 3, 8, 8)), 0, 1)
    if grey:
        rgb = np.repeat(rgb.mean(axis=1, keepdims=True), 3, axis=1)
    return rgb


def fitted(rng: np.random.Generator, signals: np.ndarray, images: np.ndarray, **kwargs) -> WindowReference:
    return WindowReference.fit(signals, pixel_stats(normalised(images), MEAN, STD), **kwargs)


def test_rank_sum_auc_is_the_share_of_pairs_the_window_wins_ties_counting_half():
    """AUC equals the pairwise count P(w > c) + P(w = c) / 2, checked by brute force with ties."""
    rng = np.random.default_rng(0)
    window, calibration = rng.integers(0, 6, 30).astype(float), rng.integers(0, 5, 50).astype(float)
    auc, _, _ = rank_sum_test(window, calibration)
    wins = (window[:, None] > calibration[None, :]).mean() + 0.5 * (window[:, None] == calibration[None, :]).mean()
    assert auc == pytest.approx(wins, abs=1e-12)


def test_the_normal_approximation_agrees_with_the_exact_permutation_p_value():
    """On a mildly shifted window of 60 (ties included) the normal p-value is within 15% of 20,000 permutations."""
    rng = np.random.default_rng(7)
    window, calibration = np.round(rng.normal(0.45, 1, 60), 1), np.round(rng.normal(0, 1, 400), 1)
    _, normal, method = rank_sum_test(window, calibration)
    _, permuted, _ = rank_sum_test(window, calibration, method="permutation", permutations=20_000)
    assert method == "normal" and rank_sum_test(window[:SMALL_WINDOW - 1], calibration)[2] == "permutation"
    assert 0.001 < permuted < 0.05
    assert normal == pytest.approx(permuted, rel=0.15)


@pytest.mark.parametrize("size", [40, 10])
def test_p_values_reject_at_the_level_asked_when_nothing_changed(size):
    """Window and calibration from one distribution: about 5% of 400 tests reject at 0.05 and 20% at 0.2,
    with the normal approximation (40 values) and with permutations (10 values)."""
    rng = np.random.default_rng(1)
    p = np.array([rank_sum_test(rng.normal(size=size), rng.normal(size=200), permutations=500, seed=i)[1]
                  for i in range(400)])
    # Binomial(400, alpha) +- 3 standard deviations.
    assert 0.05 - 0.033 <= (p <= 0.05).mean() <= 0.05 + 0.033
    assert 0.20 - 0.06 <= (p <= 0.20).mean() <= 0.20 + 0.06


def test_a_window_beyond_every_calibration_value_gets_a_tiny_p_value():
    """Every window value above every calibration value: AUC 1; p far below 1e-6 with 50 values, and the
    permutation floor 1 / (permutations + 1) with 10."""
    auc, p, method = rank_sum_test(np.arange(100, 150.0), np.arange(100.0))
    assert (auc, method) == (1.0, "normal") and p < 1e-6
    auc, p, method = rank_sum_test(np.arange(100, 110.0), np.arange(100.0), permutations=499)
    assert (auc, method) == (1.0, "permutation") and p == pytest.approx(1 / 500)


def test_pixel_stats_of_known_images():
    """Pure red: means (1, 0, 0), saturation 1, no contrast; mid grey: saturation 0; normalisation undone."""
    red = np.zeros((1, 3, 4, 4))
    red[:, 0] = 1.0
    grey = np.full((1, 3, 4, 4), 0.5)
    half = np.concatenate([np.zeros((1, 3, 4, 2)), np.ones((1, 3, 4, 2))], axis=3)
    stats = dict(zip(PIXEL_STATS, pixel_stats(normalised(np.concatenate([red, grey, half])), MEAN, STD).T,
                     strict=True))
    assert stats["mean_r"] == pytest.approx([1.0, 0.5, 0.5]) and stats["mean_g"] == pytest.approx([0.0, 0.5, 0.5])
    assert stats["saturation"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    assert stats["contrast"] == pytest.approx([0.0, 0.0, 0.5], abs=1e-6)
    assert stats["std_b"] == pytest.approx([0.0, 0.0, 0.5], abs=1e-6)


def test_greyscale_inputs_are_caught_and_fresh_training_like_inputs_are_not():
    """Fit on colourful images; 100 new ones pass, the same 100 in grey are rejected (the vision signal unchanged)."""
    rng = np.random.default_rng(2)
    train = colourful_images(rng, 600)
    reference = fitted(rng, rng.normal(size=(600, 32)), train)
    fresh = colourful_images(rng, 100)
    signals = rng.normal(size=(100, 32))
    stats = pixel_stats(normalised(fresh), MEAN, STD)
    grey_stats = pixel_stats(normalised(np.repeat(fresh.mean(axis=1, keepdims=True), 3, axis=1)), MEAN, STD)
    passed = reference.test(reference.signatures(signals, stats))
    caught = reference.test(reference.signatures(signals, grey_stats))
    assert passed.p_value > 0.05 and 0.35 < passed.statistic < 0.65
    assert caught.rejects(0.005) and caught.statistic > 0.9


def test_any_mix_of_what_the_model_was_trained_on_passes_but_a_new_kind_of_input_fails():
    """Trained on 600 inputs of one kind and 200 of another: a window of either kind alone passes (the rarer
    kind too, though the reference is sparser there); a third kind is rejected."""
    rng = np.random.default_rng(3)
    centre_a, centre_b, centre_c = np.zeros(32), np.full(32, 4.0), np.full(32, -4.0)
    signals = np.concatenate([rng.normal(centre_a, 1, (600, 32)), rng.normal(centre_b, 1, (200, 32))])
    images = colourful_images(rng, 800)
    reference = fitted(rng, signals, images, index_size=400, calibration_size=400)
    stats = pixel_stats(normalised(colourful_images(rng, 100)), MEAN, STD)
    for centre, rejected in ((centre_a, False), (centre_b, False), (centre_c, True)):
        window = reference.signatures(rng.normal(centre, 1, (100, 32)), stats)
        assert reference.test(window).rejects(0.005) is rejected


def test_repeats_of_one_input_count_once():
    """A window of one signature sent 100 times is one distinct input, not 100 independent ones."""
    rng = np.random.default_rng(4)
    reference = fitted(rng, rng.normal(size=(200, 16)), colourful_images(rng, 200))
    result = reference.test(np.repeat(reference.calibration[:1], 100, axis=0))
    assert result.window_size == 1 and not result.rejects(0.005)


def test_a_window_of_the_wrong_shape_is_refused():
    """Signatures of another length, or none at all, raise WindowDriftError instead of a wrong answer."""
    rng = np.random.default_rng(5)
    reference = fitted(rng, rng.normal(size=(100, 16)), colourful_images(rng, 100))
    with pytest.raises(WindowDriftError, match="signatures"):
        reference.test(np.zeros((10, reference.dims + 1)))
    with pytest.raises(WindowDriftError):
        reference.test(np.zeros((0, reference.dims)))


def test_saved_and_loaded_references_test_alike(tmp_path):
    """save/load keeps the projection and the samples: the same window gets the same statistic and p-value."""
    rng = np.random.default_rng(6)
    reference = fitted(rng, rng.normal(size=(300, 16)), colourful_images(rng, 300))
    reference.save(tmp_path)
    loaded = WindowReference.load(tmp_path)
    window = reference.signatures(rng.normal(size=(50, 16)), pixel_stats(normalised(colourful_images(rng, 50)),
                                                                           MEAN, STD))
    assert loaded.test(window) == reference.test(window)
    assert np.allclose(loaded.signatures(np.ones((1, 16)), np.ones((1, 8))),
                       reference.signatures(np.ones((1, 16)), np.ones((1, 8))), atol=2e-4)
    assert WindowReference.load(tmp_path / "elsewhere") is None


def test_the_committed_model_signs_each_row_alike_alone_or_in_a_batch(small_model_dir, images_root):
    """Signatures come per row: an image answered in a batch of three gets the signature it gets alone."""
    from app.model.vqa import VQAModel

    vqa = VQAModel.load(small_model_dir)
    assert (small_model_dir / WINDOW_REFERENCE_FILE).stat().st_size < 400_000
    with Image.open(images_root / "test" / "0.png") as im:
        first = im.convert("RGB")
    with Image.open(images_root / "test" / "1.png") as im:
        second = im.convert("RGB")
    batch = vqa.answer([first, greyscale(second), first], ["what color is the shape?"] * 3)
    alone = [vqa.answer([image], ["what shape is this?"])[0] for image in (first, greyscale(second))]
    assert all(len(p.signature) == vqa.window_reference.dims for p in batch)
    assert np.allclose(batch[0].signature, alone[0].signature, atol=2e-3)
    assert np.allclose(batch[1].signature, alone[1].signature, atol=2e-3)
    assert batch[0].signature == batch[2].signature
    saturation = vqa.window_reference.dims - len(PIXEL_STATS) + PIXEL_STATS.index("saturation")
    assert batch[1].signature[saturation] < batch[0].signature[saturation]

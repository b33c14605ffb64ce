"""Class frequencies, epoch lengths and determinism of the epoch samplers."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.methods.config import SAMPLERS
from longtail.samplers import available_samplers, create_sampler

COUNTS = np.array([400, 100, 25, 4])
LABELS = np.repeat(np.arange(4), COUNTS)[np.random.default_rng(0).permutation(COUNTS.sum())]  # shuffled
N = int(COUNTS.sum())


def _freq(name: str, epochs: range, num_epochs: int = 1, **params) -> np.ndarray:
    s = create_sampler(name, LABELS, num_epochs, **params)
    cnt = sum(np.bincount(LABELS[s.indices(e, np.random.default_rng([7, i]))], minlength=4)
              for i, e in enumerate(epochs))
    return cnt / cnt.sum()


def test_config_samplers_match_registry():
    assert sorted(SAMPLERS) == available_samplers()


def test_bad_sampler_params_rejected():
    with pytest.raises(ValueError, match="unknown sampler"):
        create_sampler("bogus", LABELS)
    with pytest.raises(ValueError, match="sampler_params"):
        create_sampler("class_balanced", LABELS, per_clas=4)
    with pytest.raises(ValueError, match="per_class"):
        create_sampler("class_balanced", LABELS, per_class=0)


def test_instance_is_a_permutation():
    idx = create_sampler("instance", LABELS).indices(0, np.random.default_rng(0))
    assert np.array_equal(np.sort(idx), np.arange(N))


def test_sqrt_frequencies_follow_sqrt_counts():
    expected = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()  # [20, 10, 5, 2] / 37
    np.testing.assert_allclose(_freq("sqrt", range(150)), expected, atol=0.006)
    np.testing.assert_allclose(_freq("power", range(150), q=1.0), COUNTS / N, atol=0.006)


def test_class_balanced_uniform_in_chunks_of_per_class():
    s = create_sampler("class_balanced", LABELS, per_class=4)
    idx = s.indices(0, np.random.default_rng(1))
    # N = 529 draws, as the references' epoch of int(N / batch) steps: 133 groups of 4, the last cut to 1
    assert len(idx) == N == 529
    chunks = LABELS[idx[:528]].reshape(-1, 4)
    assert (chunks == chunks[:, :1]).all()  # each chunk of 4 comes from one class
    per_class = np.bincount(chunks[:, 0], minlength=4)
    # 132 full chunks = 33 shuffled rounds of the 4 classes
    assert per_class.tolist() == [33] * 4
    np.testing.assert_allclose(_freq("class_balanced", range(20), per_class=4), 0.25, atol=0.005)
    # the 4-image class gives all of its images in each of its chunks
    tail_chunk = idx[:528].reshape(-1, 4)[chunks[:, 0] == 3][0]
    assert sorted(tail_chunk) == sorted(np.flatnonzero(LABELS == 3))


def test_class_balanced_epoch_length_and_per_class_cycles_by_hand():
    # counts (5, 2, 1): an epoch is N = 8 draws (not max n_c x C = 15, the sampler length the
    # references never reach), i.e. 4 groups of 2: one shuffled round of the 3 classes + 1 group
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 0])
    s = create_sampler("class_balanced", labels, per_class=2)
    for seed in range(20):
        idx = s.indices(0, np.random.default_rng(seed))
        assert len(idx) == 8
        groups = labels[idx].reshape(4, 2)
        assert (groups == groups[:, :1]).all()
        assert np.all(np.sort(groups[:3, 0]) == [0, 1, 2])
        for c in range(3):
            mine = idx[labels[idx] == c]
            n_c = int(np.sum(labels == c))
            # each class cycles through a shuffled pass of all its images before repeating one
            for start in range(0, len(mine), n_c):
                window = mine[start:start + n_c]
                assert len(set(window.tolist())) == len(window)


def test_class_balanced_with_more_per_class_than_the_largest_class():
    labels = np.array([0, 0, 1, 2])  # 4 draws in one group of 4: one class, its images repeated
    idx = create_sampler("class_balanced", labels, per_class=4).indices(0, np.random.default_rng(0))
    assert len(idx) == 4 and len(set(labels[idx])) == 1


def test_progressive_interpolates_from_instance_to_uniform():
    s = create_sampler("progressive", LABELS, num_epochs=11)
    np.testing.assert_allclose(s.class_probs(0), COUNTS / N)
    np.testing.assert_allclose(s.class_probs(5), 0.5 * COUNTS / N + 0.5 * 0.25)
    np.testing.assert_allclose(s.class_probs(10), 0.25)
    np.testing.assert_allclose(_freq("progressive", [0] * 40, num_epochs=11), COUNTS / N, atol=0.01)
    np.testing.assert_allclose(_freq("progressive", [10] * 40, num_epochs=11), 0.25, atol=0.01)


def test_oversample_gives_every_class_n_max():
    s = create_sampler("oversample", LABELS)
    idx = s.indices(3, np.random.default_rng(3))
    assert np.array_equal(np.bincount(LABELS[idx]), [400] * 4)
    assert set(idx) == set(range(N))  # every original image kept


def test_undersample_gives_every_class_n_min():
    s = create_sampler("undersample", LABELS)
    a, b = s.indices(0, np.random.default_rng(0)), s.indices(1, np.random.default_rng(1))
    assert np.array_equal(np.bincount(LABELS[a]), [4] * 4) and len(set(a)) == 16
    assert set(a) != set(b)  # a fresh head subset each epoch


@pytest.mark.parametrize("name", SAMPLERS)
def test_deterministic_given_rng_and_epoch_length(name):
    s = create_sampler(name, LABELS, num_epochs=5)
    a = s.indices(2, np.random.default_rng([0, 2]))
    assert np.array_equal(a, s.indices(2, np.random.default_rng([0, 2])))
    assert not np.array_equal(a, s.indices(2, np.random.default_rng([1, 2])))
    expected_len = {"oversample": 4 * 400, "undersample": 4 * 4}.get(name, N)
    assert len(a) == expected_len and a.min() >= 0 and a.max() < N

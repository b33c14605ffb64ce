"""OpenMax math (longtail.openmax): Weibull fit, distances, Alg. 1 fitting, Alg. 2 recalibration,
and the decision rule (reject where the unknown class wins; confidence 1 - P(unknown))."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import weibull_min

from longtail.methods.decoupled import openmax as om


@pytest.mark.parametrize("shape,scale", [(0.8, 0.5), (2.5, 3.0), (8.0, 10.0)])
def test_fit_weibull_recovers_known_parameters(shape, scale):
    x = weibull_min.rvs(shape, scale=scale, size=4000, random_state=np.random.default_rng(0))
    k, lam = om.fit_weibull(x)
    assert k == pytest.approx(shape, rel=0.05)
    assert lam == pytest.approx(scale, rel=0.05)


def test_fit_weibull_degenerate_tails_use_the_exponential_mle():
    assert om.fit_weibull(np.array([2.5])) == (1.0, 2.5)
    assert om.fit_weibull(np.array([3.0, 3.0, 3.0])) == (1.0, pytest.approx(3.0))


def test_weibull_cdf_matches_closed_form_and_scipy():
    d = torch.tensor([0.0, 2.0, 4.0])
    # at d = scale the CDF is 1 - 1/e whatever the shape
    assert float(om.weibull_cdf(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(2.0))) == pytest.approx(1 - math.exp(-1))
    got = om.weibull_cdf(d, torch.tensor(1.7), torch.tensor(2.5)).numpy()
    np.testing.assert_allclose(got, weibull_min.cdf(d.numpy(), 1.7, scale=2.5), rtol=1e-6)
    assert float(om.weibull_cdf(torch.tensor(-1.0), torch.tensor(2.0), torch.tensor(1.0))) == 0.0


def test_distances_by_hand():
    av, mu = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 0.0]])
    assert float(om.distance(av, mu, "euclidean")) == pytest.approx(4.0)
    # cos = 9 / (5 * 3) = 0.6 -> eucos = 4 / 200 + (1 - 0.6) = 0.42
    assert float(om.distance(av, mu, "eucos", 0.005)) == pytest.approx(0.42)
    with pytest.raises(ValueError, match="unknown distance"):
        om.distance(av, mu, "manhattan")


def test_fit_openmax_uses_correct_samples_and_the_largest_distances():
    av = torch.tensor([[2.0, 0.0], [4.0, 0.0], [-1.0, 3.0],   # class 0; the third is misclassified
                       [0.0, 1.0], [0.0, 2.0], [0.0, 6.0]])   # class 1, all correct
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    means, weibull = om.fit_openmax(av, labels, 2, tail_size=2, kind="euclidean")
    # class 0: mean of the two correct AVs = (3, 0), distances 1, 1 -> exponential fallback (1, 1)
    # class 1: mean (0, 3), distances 2, 1, 3 -> the tail of 2 is {3, 2}
    torch.testing.assert_close(means, torch.tensor([[3.0, 0.0], [0.0, 3.0]]))
    assert weibull[0].tolist() == pytest.approx([1.0, 1.0])
    assert weibull[1].tolist() == pytest.approx(list(om.fit_weibull(np.array([3.0, 2.0]))), rel=1e-5)


def test_fit_openmax_falls_back_to_all_samples_of_a_class_never_classified_correctly():
    av = torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 1.0]])  # both class-1 samples are predicted 0
    means, _ = om.fit_openmax(av, torch.tensor([0, 1, 1]), 2, tail_size=5, kind="euclidean")
    torch.testing.assert_close(means[1], torch.tensor([2.0, 0.5]))


def test_openmax_recalibration_by_hand():
    # AV v = (4, 2, 1); alpha = 2 revises the two largest: class 0 (rank weight 2/2), class 1 (1/2).
    av = torch.tensor([[4.0, 2.0, 1.0]])
    means = torch.tensor([[4.0, 2.0, 1.0],     # d_0 = 0 -> CDF 0 -> w_0 = 1
                          [4.0, 2.0, 4.0],     # d_1 = 3, Weibull (1, 3): CDF = 1 - e^-1
                          [40.0, 0.0, 0.0]])   # far away, but class 2 is outside the top alpha: w_2 = 1
    weibull = torch.tensor([[2.0, 1.0], [1.0, 3.0], [1.0, 0.1]])
    p = om.openmax_probs(av, means, weibull, alpha=2, kind="euclidean")
    w1 = 1 - 0.5 * (1 - math.exp(-1))          # 0.68394
    v_hat = [4.0, 2.0 * w1, 1.0, 2.0 * (1 - w1)]  # revised AV and v_0 = sum v_i (1 - w_i), last
    e = np.exp(v_hat)
    np.testing.assert_allclose(p[0].numpy(), e / e.sum(), rtol=1e-5)
    assert p.shape == (1, 4)


def test_openmax_alpha_larger_than_classes_is_clipped_and_far_samples_get_unknown_mass():
    means = torch.eye(3) * 5
    weibull = torch.tensor([[4.0, 1.0]] * 3)
    near = om.openmax_probs(torch.tensor([[5.0, 0.0, 0.0]]), means, weibull, alpha=10, kind="euclidean")
    far = om.openmax_probs(torch.tensor([[15.0, 9.0, 0.0]]), means, weibull, alpha=10, kind="euclidean")
    # at its class mean: w_0 = 1, and the revised zeros add nothing, so v_0 = 0 -> P_0 = 1 / (e^5 + 3)
    assert float(near[0, 3]) == pytest.approx(1 / (math.exp(5) + 3))
    assert float(far[0, 3]) > 0.99   # far from every mean: the logits move to the unknown class


def test_decide_rejects_when_the_unknown_class_wins_the_argmax():
    p = torch.tensor([[0.5, 0.2, 0.1, 0.2], [0.05, 0.1, 0.05, 0.8], [0.3, 0.05, 0.3, 0.35]])  # unknown last
    pred, conf = om.decide(p)
    assert pred.tolist() == [0, -1, -1]  # the third: P_0 = 0.35 beats 0.3, 0.05, 0.3
    torch.testing.assert_close(conf, torch.tensor([0.8, 0.2, 0.65]))  # 1 - P_0

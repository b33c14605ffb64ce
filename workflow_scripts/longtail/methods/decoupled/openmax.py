"""OpenMax (Bendale & Boult, "Towards Open Set Deep Networks", CVPR 2016), as pure functions.

Fitting (the paper's Alg. 1): for each class j, the mean activation vector (MAV) mu_j of the
correctly classified training samples of j, and a Weibull fitted to the ``tail_size`` largest
distances between those samples' activation vectors (AV: the logits) and mu_j.

Inference (Alg. 2): with s(1..alpha) the alpha largest activations of v(x),
    w_s(i) = 1 - (alpha - i + 1) / alpha * WeibullCDF(d(v(x), mu_s(i)))         (line 3)
    v_hat = v * w,  v_hat_0 = sum_j v_j (1 - w_j)                               (lines 5-6)
    P(y = j | x) = softmax over [v_hat_1 .. v_hat_C, v_hat_0]                   (line 7)
    y* = argmax_j P(y = j | x) over the C + 1 classes; reject when y* is the unknown (line 8)
alpha = 10 by default, the authors' release (``ALPHA_RANK``), clipped to min(alpha, C).
The open-set score is P_0 = P(unknown | x); as a known-class confidence, 1 - P_0.
Choices where the printed algorithm and the authors' release differ (documented, not copied):
- The revision weight uses the Weibull CDF (libMR's W-score, "the probability that the distance
  is an outlier" in the text); the printed line 3 shows the survival function exp(-(d/lambda)^k),
  which would revise inliers most.
- Rank weights (alpha - i + 1)/alpha, i = 1..alpha (1 for the top class); the printed
  (alpha - i)/alpha gives the alpha-th class weight 0, making alpha = 1 a no-op.
- The Weibull is two-parameter (location 0) and fitted by maximum likelihood with scipy on the
  tail distances themselves; libMR instead shifts the tail by a large constant before fitting.
- A class with no correctly classified training sample uses all of its samples; a tail of one
  distance (or of identical ones) gets the exponential MLE (shape 1, scale = mean distance).
- The unknown class is the LAST column (index C), so known columns keep their labels.
- Alg. 2 also rejects when P(y*) < epsilon; that threshold is not applied here (epsilon = 0): the
  evaluator's threshold acts on the confidence 1 - P_0 instead (:func:`decide`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-12


def fit_weibull(samples: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (shape k, scale lambda) of a two-parameter Weibull (location 0),
    CDF(d) = 1 - exp(-(d / lambda)^k). Degenerate samples (n < 2, all equal) get the
    exponential MLE (k = 1, lambda = mean)."""
    from scipy.stats import weibull_min

    x = np.clip(np.asarray(samples, dtype=np.float64).ravel(), EPS, None)
    if x.size == 0:
        raise ValueError("fit_weibull needs at least one sample")
    if x.size < 2 or np.ptp(x) <= 1e-9 * x.max():
        return 1.0, float(x.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's optimiser on tiny tails
        shape, _, scale = weibull_min.fit(x, floc=0)
    return float(shape), float(scale)


def weibull_cdf(d: torch.Tensor, shape: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """1 - exp(-(d / scale)^shape) for d >= 0 (0 below), broadcast over the arguments."""
    z = (d.clamp_min(0) / scale.clamp_min(EPS)).pow(shape)
    return 1.0 - torch.exp(-z)


def distance(av: torch.Tensor, means: torch.Tensor, kind: str = "eucos",
             euclidean_weight: float = 0.005) -> torch.Tensor:
    """Distances (N, M) between activation vectors av (N, C) and means (M, C).

    euclidean: ||v - mu||_2. eucos: euclidean_weight * ||v - mu||_2 + (1 - cos(v, mu))."""
    eu = torch.cdist(av.double(), means.double()).to(av.dtype)
    if kind == "euclidean":
        return eu
    if kind == "eucos":
        cos = F.normalize(av, dim=1, eps=EPS) @ F.normalize(means, dim=1, eps=EPS).T
        return euclidean_weight * eu + (1.0 - cos)
    raise ValueError(f"unknown distance '{kind}'; choose eucos or euclidean")


def fit_openmax(av: torch.Tensor, labels: torch.Tensor, num_classes: int, tail_size: int = 20,
                kind: str = "eucos", euclidean_weight: float = 0.005) -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 1 on training activation vectors av (N, C) with labels (N,).

    Returns (means (C, C), weibull (C, 2) = [shape, scale] per class)."""
    av, labels = av.float(), labels.long()
    correct = av.argmax(1) == labels
    means = torch.zeros(num_classes, av.shape[1])
    weibull = torch.zeros(num_classes, 2)
    for j in range(num_classes):
        mine = labels == j
        if not mine.any():
            raise ValueError(f"class {j} has no training sample; OpenMax needs every class")
        sel = mine & correct if (mine & correct).any() else mine  # fallback: all samples of j
        v = av[sel]  # (n_j, C)
        means[j] = v.mean(0)
        d = distance(v, means[j: j + 1], kind, euclidean_weight)[:, 0]  # (n_j,)
        tail = torch.topk(d, min(tail_size, len(d))).values
        weibull[j] = torch.tensor(fit_weibull(tail.numpy()))
    return means, weibull


def openmax_probs(av: torch.Tensor, means: torch.Tensor, weibull: torch.Tensor, alpha: int,
                  kind: str = "eucos", euclidean_weight: float = 0.005) -> torch.Tensor:
    """Alg. 2: OpenMax probabilities (N, C + 1) of activation vectors av (N, C); column C is the
    unknown class."""
    n, c = av.shape
    alpha = min(alpha, c)
    d = distance(av, means, kind, euclidean_weight)  # (N, C): distance to every class mean
    w_score = weibull_cdf(d, weibull[:, 0], weibull[:, 1])  # (N, C)
    ranks = av.argsort(dim=1, descending=True)[:, :alpha]  # s(1..alpha), (N, alpha)
    rank_w = (alpha - torch.arange(alpha, dtype=av.dtype, device=av.device)) / alpha  # (alpha - i + 1)/alpha
    omega = torch.ones_like(av)
    omega.scatter_(1, ranks, 1.0 - rank_w * w_score.gather(1, ranks))  # line 3
    revised = av * omega  # line 5
    unknown = (av * (1.0 - omega)).sum(1, keepdim=True)  # line 6, (N, 1)
    return torch.softmax(torch.cat([revised, unknown], dim=1), dim=1)  # line 7


def decide(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenMax's decision on probabilities (N, C + 1), unknown last: (pred (N,) int64, confidence
    (N,)). pred = argmax over the C + 1 classes, -1 (unknown) when the unknown class wins (Alg. 2
    line 8); confidence = 1 - P_0, the known-vs-unknown score (high = known)."""
    c = probs.shape[1] - 1
    top = probs.argmax(dim=1)
    pred = torch.where(top == c, torch.full_like(top, -1), top)
    return pred, 1.0 - probs[:, c]

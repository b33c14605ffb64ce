"""Epoch samplers: each returns the training indices of one epoch.

An epoch's indices depend only on (labels, epoch, rng), and the trainer seeds ``rng`` from
(seed, epoch), so a run resumed after a kill sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .registry import Registry

SamplerFn = Callable[..., "Sampler"]
SAMPLERS: Registry[SamplerFn] = Registry("sampler")
register_sampler = SAMPLERS.register


def available_samplers() -> list[str]:
    return SAMPLERS.names()


def create_sampler(name: str, labels: np.ndarray, num_epochs: int = 1, **params) -> "Sampler":
    return SAMPLERS.build(name, np.asarray(labels), num_epochs=num_epochs, params_key="sampler_params", **params)


class Sampler:
    def __init__(self, labels: np.ndarray, num_epochs: int = 1) -> None:
        if len(labels) == 0:
            raise ValueError("cannot sample from an empty training split")
        self.labels = labels
        self.num_epochs = num_epochs
        self.classes, self.counts = np.unique(labels, return_counts=True)
        self.by_class = [np.flatnonzero(labels == c) for c in self.classes]

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        """Probability of drawing each class (per draw); used by tests and progressive sampling."""
        raise NotImplementedError

    def _draw_by_class_probs(self, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        # pick a class per draw, then an image uniformly within it
        cls = rng.choice(len(self.classes), size=n, p=p)
        out = np.empty(n, dtype=np.int64)
        for k in range(len(self.classes)):
            sel = cls == k
            out[sel] = rng.choice(self.by_class[k], size=int(sel.sum()), replace=True)
        return out


@register_sampler("instance")
class InstanceSampler(Sampler):
    """Instance-balanced: every image once per epoch, shuffled (p_j proportional to n_j)."""

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(self.labels))

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        return self.counts / self.counts.sum()


@register_sampler("power")
class PowerSampler(Sampler):
    """p_j proportional to n_j^q (decoupling, Kang et al. 2020): q=1 instance, q=0.5 square-root,
    q=0 class-balanced. Epoch length = number of training images."""

    def __init__(self, labels: np.ndarray, num_epochs: int = 1, q: float = 0.5) -> None:
        if q < 0:
            raise ValueError(f"sampler_params.q must be >= 0, got {q}")
        super().__init__(labels, num_epochs)
        self.q = q

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        w = self.counts.astype(float) ** self.q
        return w / w.sum()

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return self._draw_by_class_probs(self.class_probs(epoch), len(self.labels), rng)


@register_sampler("sqrt")
def sqrt_sampler(labels: np.ndarray, num_epochs: int = 1) -> Sampler:
    """Square-root sampling, p_j proportional to n_j^(1/2) (KT's default)."""
    return PowerSampler(labels, num_epochs, q=0.5)


@register_sampler("class_balanced")
class ClassAwareSampler(Sampler):
    """Class-aware sampling (Shen et al. 2016) as OLTR's and decoupling's ``ClassAwareSampler``:
    classes are drawn in shuffled rounds (every class once per round), and each drawn class
    contributes the next ``per_class`` images of its own shuffled cycle (every image of the class
    once before any repeats), so a batch holds batch_size/per_class classes.

    Epoch length = the number of training images N. The reference samplers are max_c n_c x C
    long (their ``num_samples``), but both reference training loops stop an epoch after
    ``epoch_steps = int(N / batch_size)`` steps ("based on actual number of training data instead
    of oversampled data number", decoupling's and OLTR's ``run_networks.py``), so an epoch there
    sees N images too. Unlike the references, whose cycles carry their position from one epoch
    into the next, every epoch starts fresh cycles, so an epoch's indices depend on (labels,
    epoch, rng) only."""

    def __init__(self, labels: np.ndarray, num_epochs: int = 1, per_class: int = 4) -> None:
        if per_class < 1:
            raise ValueError(f"sampler_params.per_class must be >= 1, got {per_class}")
        super().__init__(labels, num_epochs)
        self.per_class = int(per_class)

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        return np.full(len(self.classes), 1.0 / len(self.classes))

    def epoch_length(self) -> int:
        return len(self.labels)

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        n, k = self.epoch_length(), self.per_class
        n_groups = -(-n // k)
        rounds = -(-n_groups // len(self.classes))
        cls = np.concatenate([rng.permutation(len(self.classes)) for _ in range(rounds)])[:n_groups]
        out = np.empty(n_groups * k, dtype=np.int64)
        for c, members in enumerate(self.by_class):
            slots = (np.flatnonzero(cls == c)[:, None] * k + np.arange(k)).ravel()  # this class's draws, in order
            if not len(slots):  # per_class > max_c n_c: fewer groups than classes
                continue
            passes = -(-len(slots) // len(members))
            out[slots] = np.concatenate([rng.permutation(members) for _ in range(passes)])[: len(slots)]
        return out[:n]


@register_sampler("progressive")
class ProgressiveSampler(Sampler):
    """Progressively-balanced sampling (Kang et al., ICLR 2020, Sec. 3): p_j(t) = (1 - t) p_j^IB +
    t p_j^CB with t = epoch / (T - 1), so epoch 0 is instance-balanced and the last epoch is
    class-balanced (the paper's t/T never quite reaches it). Epoch length = number of images."""

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        t = epoch / max(self.num_epochs - 1, 1)
        inst = self.counts / self.counts.sum()
        return (1 - t) * inst + t / len(self.classes)

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return self._draw_by_class_probs(self.class_probs(epoch), len(self.labels), rng)


@register_sampler("oversample")
class OverSampler(Sampler):
    """Random over-sampling: every class replicated (with replacement) up to the largest class."""

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        return np.full(len(self.classes), 1.0 / len(self.classes))

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        n_max = int(self.counts.max())
        parts = [np.concatenate([idx, rng.choice(idx, n_max - len(idx), replace=True)]) for idx in self.by_class]
        return rng.permutation(np.concatenate(parts))


@register_sampler("undersample")
class UnderSampler(Sampler):
    """Random under-sampling: every class cut (a fresh random subset each epoch) to the smallest."""

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        return np.full(len(self.classes), 1.0 / len(self.classes))

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        n_min = int(self.counts.min())
        return rng.permutation(np.concatenate([rng.choice(idx, n_min, replace=False) for idx in self.by_class]))

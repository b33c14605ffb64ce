"""``plain``: softmax cross-entropy with instance-balanced sampling (the baseline of every paper)."""

from __future__ import annotations

from . import register_method
from .base import Method


@register_method("plain")
class Plain(Method):
    """Joint training of backbone and linear classifier; every other trained baseline is this
    class with another sampler / loss / head in its config."""

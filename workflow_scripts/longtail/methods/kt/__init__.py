"""Compositional knowledge transfer (KT, Parisot et al., CVPR 2022) and its figures."""

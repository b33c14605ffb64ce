"""OLTR (Liu et al., CVPR 2019): dynamic meta-embedding, modulated attention, and its figures."""

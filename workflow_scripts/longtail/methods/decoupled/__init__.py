"""Decoupling (Kang et al., ICLR 2020): cRT, LWS, tau-norm, NCM on a frozen backbone; OpenMax
(Bendale & Boult, CVPR 2016)."""

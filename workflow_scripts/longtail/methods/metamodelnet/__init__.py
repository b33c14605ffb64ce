"""MetaModelNet (Wang et al., NIPS 2017): model dynamics from a few-shot model bank, and its figures."""

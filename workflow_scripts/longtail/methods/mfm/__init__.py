"""MFM (meta feature modulator) and the bilevel re-weighting baselines MW-Net and L2RW, and MFM figures."""

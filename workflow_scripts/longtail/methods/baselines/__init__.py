"""Baselines trained end to end: plain, LDAM-DRW, range loss, lifted loss (samplers and losses by config)."""

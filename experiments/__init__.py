"""Experiments built on `dssim_mae_jax.training`; not part of the installed library."""

"""Compiled Cython kernels (built from ext/*.pyx). Only the wrapper modules import these."""

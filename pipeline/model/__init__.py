"""The physics: landscape, kernels (one per backend), references, the determinism rule, the exact
solver. Pure functions of arrays and numbers: no Dask, no I/O, nothing else of the package."""

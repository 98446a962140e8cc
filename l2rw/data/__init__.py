"""Datasets, deterministic splits, label noise and class imbalance.

Importing the package registers every dataset: those of `sources.py`, and those of the modules
that add their own (`folder`, `arrays`, the real-noise `benchmarks`; each imports `sources`, so
`sources` imports none of them and no import order makes a cycle).
"""

from l2rw.data import arrays, benchmarks, folder, sources  # noqa: F401

"""Test rigs and benchmark helpers: root-only test hosts in network namespaces, the environment
generator, the metric readers of the benchmarks.

Not part of the installed `hybridml` package and never imported by product code (infra/, policies/,
clusters/, workloads/, datacenter/, hybridml/), so none of it is hashed into a stack's inputs
fingerprint. Modules here may import any product room; `scripts/` and `tests/` import them.
"""

"""Fixtures shared with tests/pulumi_mocks.py (cached program runs under mocks)."""
from tests.pulumi_mocks import tiny_spec_file  # noqa: F401  (fixture)

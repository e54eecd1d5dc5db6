"""Errors of the local control planes, under the one root `infra.errors.HybridmlError`.

They stay RuntimeError/TimeoutError too: the cluster start-up wraps any component failure with the
log tails of every component (controlplane.up_cluster), whichever of them raised it.
"""
from __future__ import annotations

from infra.errors import HybridmlError


class LocalClusterError(HybridmlError, RuntimeError):
    """A local control plane's component did not start or stay up (the message carries its log tail); exit 1."""

    exit_code = 1


class LocalClusterTimeout(LocalClusterError, TimeoutError):
    """A local component did not become healthy in time; exit 1."""

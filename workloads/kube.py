"""Turn plain manifests (dicts from workloads/render) into Pulumi Kubernetes resources.

Every object is registered under the Kubernetes provider's own type token `kubernetes:<apiVersion>:<Kind>`
(the token the typed pulumi_kubernetes classes and `apiextensions.CustomResource` register), with the
manifest as its inputs. The provider applies the same schema, diff and await logic; skipping the typed
Python wrappers halves the program's CPU time for a fleet of thousands of objects. Components call
`create` and never build resources inside `.apply(...)`.
"""
from __future__ import annotations

import pulumi
from pulumi_kubernetes import _utilities

from clusters.handle import ClusterHandle
from infra.errors import HybridmlError, InvalidValue

SECRET_FIELDS = ["data", "stringData"]


class KubeObject(pulumi.CustomResource):
    """One Kubernetes object from its manifest (apiVersion, kind, metadata and the kind's fields)."""

    def __init__(self, name: str, manifest: dict, opts: pulumi.ResourceOptions):
        extra = pulumi.ResourceOptions(version=_utilities.get_version())
        if manifest["kind"] == "Secret" and manifest["apiVersion"] == "v1":
            extra.additional_secret_outputs = list(SECRET_FIELDS)
        group_version = manifest["apiVersion"] if "/" in manifest["apiVersion"] else f"core/{manifest['apiVersion']}"
        super().__init__(f"kubernetes:{group_version}:{manifest['kind']}", name, dict(manifest),
                         pulumi.ResourceOptions.merge(opts, extra))


def create(name: str, manifest: dict, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One Kubernetes object. `name` is the Pulumi resource name; the object's own name is in its metadata."""
    if "apiVersion" not in manifest or "kind" not in manifest:
        raise InvalidValue(f"{name}: a manifest needs apiVersion and kind")
    return KubeObject(name, manifest, opts)


def child_options(parent: pulumi.Resource, cluster: ClusterHandle, *, depends_on: list | None = None,
                  ignore_changes: list[str] | None = None) -> pulumi.ResourceOptions:
    """Children target the site's cluster and wait for its namespaces, CRDs and controllers (`ready`)."""
    return pulumi.ResourceOptions(parent=parent, provider=cluster.provider,
                                  depends_on=list(cluster.ready) + list(depends_on or []),
                                  ignore_changes=ignore_changes)


class ComponentError(pulumi.RunError, HybridmlError):
    """A problem that belongs to one component (the Python SDK has no `ResourceError`): logged against the
    component so `pulumi up` shows its URN, and raised as a RunError (clean exit, no stack trace)."""

    def __init__(self, component: pulumi.Resource, message: str):
        try:
            pulumi.log.error(message, resource=component)
        except Exception:  # noqa: BLE001 - logging must never hide the error itself
            pass
        super().__init__(message)


def check_tier(component: pulumi.Resource, cluster: ClusterHandle, tier: str, what: str) -> None:
    """Refuse to put a `tier` workload on a cluster whose site may not hold that tier (defence in depth:
    the placement already decided; this catches a hand-built or stale plan)."""
    if cluster.privacy_tiers and tier not in cluster.privacy_tiers:
        raise ComponentError(
            component, f"{what} is {tier} but site {cluster.site} holds only {', '.join(cluster.privacy_tiers)}; "
                       f"re-run placement (hybridml plan) or fix the site's privacy_tiers")

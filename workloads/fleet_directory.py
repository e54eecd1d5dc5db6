"""FleetDirectory: the fleet directory ConfigMap (workloads/render/fleet.py) on every cluster of an
environment. Built by the whole-environment stack from its own sites, and by the fleet stack of a
sharded environment from the site stacks' outputs (stack references)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra import labels as L
from workloads.kube import create
from workloads.render import fleet


@dataclass
class FleetDirectoryArgs:
    environment: str
    plan_digest: str
    # site -> what that site reports (fleet.member(...)); plain dicts or Outputs of them
    members: dict[str, Any] = field(default_factory=dict)
    # site -> the provider of its cluster (the directory is written to every one)
    providers: dict[str, pulumi.ProviderResource] = field(default_factory=dict)
    depends_on: dict[str, list[pulumi.Resource]] = field(default_factory=dict)
    namespace: str = L.GATEWAY_NAMESPACE


class FleetDirectory(pulumi.ComponentResource):
    def __init__(self, name: str, args: FleetDirectoryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:FleetDirectory", name, None, opts)
        sites = sorted(args.members)
        content = pulumi.Output.all(*[args.members[s] for s in sites]).apply(
            lambda ms: fleet.directory(args.environment, args.plan_digest, dict(zip(sites, ms, strict=False))))
        # Members of a cloud fleet carry their kubeconfig as a secret; the directory keeps only the
        # public fields (fleet.PUBLIC_FIELDS), so it is published as plain data.
        self.content = pulumi.Output.unsecret(content)
        manifest = fleet.config_map(args.namespace, args.plan_digest, self.content.apply(fleet.render))
        for site in sorted(args.providers):
            create(f"{site}-{name}", manifest, pulumi.ResourceOptions(
                parent=self, provider=args.providers[site], depends_on=args.depends_on.get(site, [])))
        self.register_outputs({"sites": sites, "plan_digest": args.plan_digest})

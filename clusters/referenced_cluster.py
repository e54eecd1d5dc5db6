"""ReferencedCluster: a cluster another stack built, reached through that stack's outputs.

The fleet stack of a sharded environment (hybridml/shards.py) writes to every site's cluster without
building any: each site stack exports how to reach its cluster (`fleet_members[site].kubeconfig` and
`.context`, secret for real clusters), and this component makes a provider from them by stack
reference, never by copying credentials between stacks.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s


@dataclass
class ReferencedClusterArgs:
    site: str
    member: pulumi.Output  # the site stack's fleet_members[site] (a dict with kubeconfig and context)


class ReferencedCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: ReferencedClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:ReferencedCluster", name, None, opts)
        kubeconfig = args.member.apply(lambda m: _field(m, args.site, "kubeconfig"))
        context = args.member.apply(lambda m: (m or {}).get("context"))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=pulumi.Output.secret(kubeconfig), context=context,
                                     enable_server_side_apply=True, delete_unreachable=True,
                                     opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"site": args.site})


def _field(member: dict | None, site: str, key: str):
    if not member or not member.get(key):
        raise pulumi.RunError(f"the stack of site {site} exports no fleet_members.{site}.{key}: run "
                              f"`hybridml up` for that site first (it exports how to reach its cluster)")
    return member[key]

"""Every policy rule, importable without Pulumi: one list used by CrossGuard and by `hybridml check`."""
from policies.rules import aws, dataflow, datapaths, edge_auth, kubernetes, placement, pod_security, referents, secrets
from policies.rules.base import Context, Enforcement, Finding, ResourceView, Rule, Severity, SiteFacts, evaluate

ALL_RULES: list[Rule] = [*pod_security.RULES, *kubernetes.RULES, *placement.RULES, *dataflow.RULES, *datapaths.RULES,
                         *aws.RULES, *secrets.RULES, *referents.RULES, *edge_auth.RULES]
RULES_BY_NAME = {r.name: r for r in ALL_RULES}

__all__ = ["ALL_RULES", "RULES_BY_NAME", "Context", "Enforcement", "Finding", "ResourceView", "Rule", "Severity",
           "SiteFacts", "evaluate"]

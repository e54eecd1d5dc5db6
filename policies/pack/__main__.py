"""CrossGuard policy pack: the rules of policies/rules, enforced at `pulumi preview` / `pulumi up`.

    pulumi preview --stack local --policy-pack policies/pack

The spec that gives the site facts (which tiers and GPU types each cluster's site holds) is
read from $HYBRIDML_SPEC, default infra/environments/local.yaml.
"""
from pulumi_policy import PolicyPack

from policies.crossguard import policies

PolicyPack(name="hybridml", policies=policies())

"""CrossGuard policy pack: the rules of policies/rules, enforced at `pulumi preview` / `pulumi up`.

    pulumi preview --stack local --policy-pack policies/pack

The site facts (which tiers and GPU types each cluster's site holds) and the plan come from the stack
being previewed: its own `hybridml:spec` and `hybridml:plan` config, as the program reads them (the engine
hands the pack the stack's config). A program without `hybridml:spec` may name one in $HYBRIDML_SPEC;
there is no default, so prod is never checked against another environment's sites.
"""
from pulumi_policy import PolicyPack

from policies.crossguard import policies

PolicyPack(name="hybridml", policies=policies())

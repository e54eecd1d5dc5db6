"""CrossGuard policy pack: the rules of policies/rules, enforced at `pulumi preview` / `pulumi up`.

    pulumi preview --stack local --policy-pack policies/pack

The site facts (which tiers and GPU types each cluster's site holds) and the plan come from the stack
being previewed: its own `hybridml:spec` and `hybridml:plan` config, as the program reads them (the engine
hands the pack the stack's config). A program without `hybridml:spec` may name one in $HYBRIDML_SPEC;
there is no default, so prod is never checked against another environment's sites.
"""
from typing import Any

from pulumi_policy import PolicyPack
from pulumi_policy import policy as _policy

from policies.crossguard import policies, record_stack

# The engine hands a pack the previewed stack's name and config in its ConfigureStack call; pulumi-policy
# 1.21 keeps only the stack's tags from it, so the pack records the rest before handing the call on.
_configure_stack = _policy._PolicyAnalyzerServicer.ConfigureStack


def _record_and_configure(self: Any, request: Any, context: Any) -> Any:
    record_stack(request.stack, request.config)
    return _configure_stack(self, request, context)


_policy._PolicyAnalyzerServicer.ConfigureStack = _record_and_configure  # type: ignore[method-assign,assignment]
PolicyPack(name="hybridml", policies=policies())

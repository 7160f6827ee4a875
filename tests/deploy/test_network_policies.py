"""deploy/kubernetes locked down: no service account token in any pod, every ticketrelay pod
behind a default-deny NetworkPolicy with only the traffic it needs, and each process connecting
to Redis as the user of its role."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
ACL = ROOT / "deploy" / "redis" / "users.acl"
# The Redis user each process runs as (deploy/redis/README.md).
ROLE_OF = {
    "intake": "intake",
    "worker": "worker",
    "beat": "worker",
    "flower": "flower",
    "metrics": "exporter",
}


def docs(*subdirs: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for sub in subdirs:
        for f in sorted((K8S / sub).glob("*.yaml")):
            if f.name != "kustomization.yaml":
                found += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return found


def pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"])
        for d in docs("app", "migrate")
        if d["kind"] in ("Deployment", "Job")
    ]


def policies() -> list[dict[str, Any]]:
    return [d for d in docs("app") if d["kind"] == "NetworkPolicy"]


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"]
    if not sel.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in sel.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_no_pod_gets_a_service_account_token() -> None:
    found = pods()
    assert len(found) >= 7
    for name, template in found:
        assert template["spec"].get("automountServiceAccountToken") is False, name


def test_every_pod_is_behind_a_default_deny_and_only_flower_and_metrics_take_ingress() -> None:
    for name, template in pods():
        labels = template["metadata"]["labels"]
        mine = [p for p in policies() if selects(p, labels)]
        deny = [p for p in mine if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}]
        assert any("ingress" not in p["spec"] and "egress" not in p["spec"] for p in deny), name
        ingress = [rule for p in mine for rule in p["spec"].get("ingress", [])]
        component = labels["app.kubernetes.io/component"]
        if component not in ("flower", "metrics"):
            assert ingress == [], f"{name} takes no connections"
            continue
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for rule in ingress:
            assert {p["port"] for p in rule["ports"]} >= ports, name
            for source in rule["from"]:
                assert set(source) == {"namespaceSelector"}, "from the monitoring namespace only"
                assert source["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "monitoring"
                }


def test_egress_is_dns_the_stores_and_https_for_the_workers_only() -> None:
    for name, template in pods():
        labels = template["metadata"]["labels"]
        ports = {
            port["port"]
            for p in policies()
            if selects(p, labels)
            for rule in p["spec"].get("egress", [])
            for port in rule["ports"]
        }
        expected = {53, 6379, 5432}
        if labels["app.kubernetes.io/component"].startswith("worker-"):
            expected.add(443)  # provider APIs and signed callbacks
        assert ports == expected, name


def test_each_process_connects_to_redis_as_its_role() -> None:
    secrets = {
        d["metadata"]["name"]: d.get("stringData", {}) for d in docs("secrets") if d["kind"] == "Secret"
    }
    users = {line.split()[1] for line in ACL.read_text().splitlines() if line.startswith("user ")}
    for name, template in pods():
        container = template["spec"]["containers"][0]
        process = container["args"][0]
        if process == "migrate":
            continue
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            if "secretRef" in source:
                env.update(secrets[source["secretRef"]["name"]])  # later sources win, as in Kubernetes
        url = urlsplit(env["TICKETRELAY_REDIS_URL"])
        assert url.username == ROLE_OF[process] and url.username in users, name
        assert url.password, name

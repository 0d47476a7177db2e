"""The Ansible roles render valid Kubernetes manifests and deploy them: checked with the real ansible-playbook.

Renders playbooks/deploy.yml into a temporary folder and checks every manifest against the Kubernetes JSON
schema and the project's rules (labels, resources, probes, non-root); lints playbooks/; and (slow) applies it
with kubernetes.core.k8s to a real control plane (infra/kube: etcd, kube-apiserver, controllers, scheduler,
a kwok node, metrics-server), where every object must become ready, a redeploy must roll out and the HPA
must scale on CPU.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from app.config import FIELDS, REPO_ROOT
from infra.kube.build import kubernetes_version
from infra.kube.cluster import DEFAULT_STORAGE_CLASS, EXTRA_STORAGE_CLASS, NODE_NAME, KubeCluster

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
    # The watchdog asks the service, by its Service name, for the window drift reference.
    assert configmaps[1].obj["data"]["VQA_SERVICE_URL"] == "http://vqa-app:5000"
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


def test_volume_claims_name_a_storage_class_only_when_one_is_given(manifests: list[Manifest], tmp_path: Path) -> None:
    """By default the claims name no class (the cluster's default); the role settings name one per claim."""
    es_template = one(manifests, "elk", "StatefulSet").obj["spec"]["volumeClaimTemplates"][0]
    assert "storageClassName" not in es_template["spec"]
    assert "storageClassName" not in one(manifests, "watchdog", "PersistentVolumeClaim").obj["spec"]
    out = tmp_path / "manifests"
    proc = render(out, "elk_elasticsearch_storage_class=fast-ssd", "watchdog_state_storage_class=small-hdd")
    assert proc.returncode == 0, f"ansible-playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    rendered = load(out)
    es_template = one(rendered, "elk", "StatefulSet").obj["spec"]["volumeClaimTemplates"][0]
    assert es_template["spec"]["storageClassName"] == "fast-ssd"
    assert one(rendered, "watchdog", "PersistentVolumeClaim").obj["spec"]["storageClassName"] == "small-hdd"


def test_playbooks_pass_ansible_lint_production_profile(tmp_path: Path) -> None:
    """ansible-lint passes on playbooks/ with the production profile, offline."""
    env = _ansible_env(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([str(ANSIBLE_BIN / "ansible-lint"), "--offline", "--nocolor", "playbooks/"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed" in output


# --- apply mode, against a real control plane (tests/fixtures_kube.py) -------------------------------------

ADMIN_TOKEN = "s3cret-admin"
JENKINS_TOKEN = "jenkins-tok"
FILEBEAT_USER = "system:serviceaccount:logging:filebeat"
# Resources Filebeat's add_kubernetes_metadata reads (pod, its namespace and node, the owning ReplicaSet or Job).
FILEBEAT_READS = {("", "pods"), ("", "namespaces"), ("", "nodes"), ("apps", "replicasets"), ("batch", "jobs")}
# What every authenticated user may create: reviews of its own access (system:basic-user and friends).
SELF_REVIEWS = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
WAIT_SECONDS = 240.0


@dataclass
class Deployed:
    cluster: KubeCluster
    first: subprocess.CompletedProcess[str]
    apply: Callable[..., subprocess.CompletedProcess[str]]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll `probe()` until it returns something truthy; fail with `what` and the last value after `timeout`."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s; last seen: {value!r}")


@pytest.fixture(scope="module")
def deployed(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """playbooks/deploy.yml applied once to the test cluster, the watchdog's claim in the non-default class."""
    tmp = tmp_path_factory.mktemp("apply")

    def apply(*extra_vars: str) -> subprocess.CompletedProcess[str]:
        # A fresh TMPDIR per run: kubernetes.core caches API discovery there, per server address.
        run_tmp = Path(tempfile.mkdtemp(dir=tmp))
        env = kube_cluster.env(_ansible_env(run_tmp))
        env["TMPDIR"] = str(run_tmp)
        return run_playbook(env, f"watchdog_state_storage_class={EXTRA_STORAGE_CLASS}", *extra_vars)

    first = apply(f"vqa_deploy_admin_token={ADMIN_TOKEN}", f"watchdog_jenkins_api_token={JENKINS_TOKEN}")
    assert first.returncode == 0, f"ansible-playbook failed:\n{first.stdout[-6000:]}\n{first.stderr[-3000:]}"
    return Deployed(kube_cluster, first, apply)


def workload_ready(obj: dict[str, Any]) -> bool:
    status, kind = obj.get("status", {}), obj["kind"]
    if kind == "DaemonSet":
        return status.get("desiredNumberScheduled", 0) >= 1 and status.get("numberReady") == status[
            "desiredNumberScheduled"]
    wanted = obj["spec"].get("replicas", 1)
    return wanted >= 1 and status.get("readyReplicas") == wanted and status.get("updatedReplicas") == wanted


def pods_of(cluster: KubeCluster, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    return cluster.get_json("pods", "-n", namespace, "-l", labels)["items"]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def secret_value(cluster: KubeCluster, namespace: str, name: str, key: str) -> str:
    return base64.b64decode(cluster.get_json("secret", name, "-n", namespace)["data"][key]).decode()


@pytest.mark.slow
def test_apply_mode_makes_every_object_of_the_three_roles_and_their_pods_ready(
        deployed: Deployed, manifests: list[Manifest]) -> None:
    """Every rendered object exists on the cluster; each workload's pods run Ready on the kwok node."""
    cluster = deployed.cluster
    assert ADMIN_TOKEN not in deployed.first.stdout + deployed.first.stderr, "a secret reached the playbook output"
    for m in manifests:
        namespace = ["-n", m.obj["metadata"]["namespace"]] if "namespace" in m.obj["metadata"] else []
        live = cluster.get_json(m.kind.lower(), m.name, *namespace)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ansible", str(m)
        if m.kind in POD_OWNERS:
            assert workload_ready(live), f"{m} is not ready: {live.get('status')}"
            pods = pods_of(cluster, live["metadata"]["namespace"], live["spec"]["selector"]["matchLabels"])
            assert pods and all(is_ready(p) and p["spec"]["nodeName"] == NODE_NAME for p in pods), str(m)
    assert secret_value(cluster, "vqa", "vqa-secrets", "VQA_ADMIN_TOKEN") == ADMIN_TOKEN
    assert secret_value(cluster, "vqa", "vqa-watchdog-secrets", "JENKINS_API_TOKEN") == JENKINS_TOKEN


@pytest.mark.slow
def test_volume_claims_bind_through_the_named_storage_class_or_the_clusters_default(deployed: Deployed) -> None:
    """Elasticsearch's claim (no class given) gets the default class, the watchdog's the one named; both Bound."""
    cluster = deployed.cluster
    es_claim = cluster.get_json("pvc", "data-elasticsearch-0", "-n", "logging")
    watchdog_claim = cluster.get_json("pvc", "vqa-watchdog-state", "-n", "vqa")
    assert es_claim["spec"]["storageClassName"] == DEFAULT_STORAGE_CLASS
    assert watchdog_claim["spec"]["storageClassName"] == EXTRA_STORAGE_CLASS
    for claim in (es_claim, watchdog_claim):
        assert claim["status"]["phase"] == "Bound", claim["status"]
        volume = cluster.get_json("pv", claim["spec"]["volumeName"])
        assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"]


@pytest.mark.slow
def test_validate_checks_against_the_version_the_api_server_reports(deployed: Deployed) -> None:
    """The server reports the pinned release; kubernetes-validate has its schemas, so no version warning."""
    server = json.loads(deployed.cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == kubernetes_version()
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
                                 server["gitVersion"], strict=True)
    # kubernetes.core's validate asks the server for its version; for a version without schemas it only warns.
    output = deployed.first.stdout + deployed.first.stderr
    assert "doesn't support kubernetes version" not in output, output[-3000:]


@pytest.mark.slow
def test_filebeat_service_account_may_read_pod_metadata_and_do_nothing_more(deployed: Deployed) -> None:
    """SubjectAccessReviews: Filebeat may list and watch pods; it may not write, exec, or read Secrets."""
    cluster = deployed.cluster

    def allowed(verb: str, resource: str, group: str = "", namespace: str = "", subresource: str = "") -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": FILEBEAT_USER, "groups": ["system:serviceaccounts", "system:serviceaccounts:logging",
                                              "system:authenticated"],
            "resourceAttributes": {"verb": verb, "resource": resource, "group": group, "namespace": namespace,
                                   "subresource": subresource}}}
        done = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
        return json.loads(done.stdout)["status"].get("allowed", False)

    for verb in ("list", "watch", "get"):
        assert allowed(verb, "pods"), f"filebeat may not {verb} pods"
        assert allowed(verb, "pods", namespace="vqa"), f"filebeat may not {verb} pods in vqa"
    denied = [("create", "pods", ""), ("delete", "pods", ""), ("patch", "pods", ""), ("update", "nodes", ""),
              ("get", "secrets", ""), ("list", "secrets", ""), ("list", "configmaps", ""),
              ("create", "deployments", "apps"), ("delete", "namespaces", ""), ("bind", "clusterroles",
                                                                               "rbac.authorization.k8s.io"),
              ("impersonate", "serviceaccounts", "")]
    assert [d for d in denied if allowed(d[0], d[1], d[2], namespace="vqa")] == []
    assert not allowed("create", "pods", namespace="vqa", subresource="exec")
    assert not allowed("get", "pods", namespace="vqa", subresource="log")
    # Everything it may do, as the server lists it: reads of the metadata resources, and self-reviews.
    # (--validate=false: kubectl's own schema check would list CRDs as Filebeat, which it may not.)
    as_filebeat = ["--as", FILEBEAT_USER, "--as-group", "system:serviceaccounts",
                   "--as-group", "system:serviceaccounts:logging", "--validate=false"]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "vqa"}}
    done = cluster.kubectl("create", "-f", "-", "-o", "json", *as_filebeat, input=json.dumps(review))
    rules = json.loads(done.stdout)["status"]["resourceRules"]
    reads, writes = set(), []
    for rule in rules:
        pairs = {(g, r) for g in rule.get("apiGroups", []) for r in rule.get("resources", [])}
        if set(rule["verbs"]) <= {"get", "list", "watch"}:
            reads |= pairs
        else:
            writes.append(rule)
    assert reads == FILEBEAT_READS
    assert all(set(r["verbs"]) == {"create"} and set(r["resources"]) <= SELF_REVIEWS for r in writes), writes


@pytest.mark.slow
def test_a_tag_only_redeploy_rolls_out_a_new_replicaset_and_keeps_the_secrets(deployed: Deployed) -> None:
    """Redeploying with only a new image tag: a new ReplicaSet serves, the old one is scaled to 0, Secrets stay."""
    cluster = deployed.cluster
    selector = {"app.kubernetes.io/name": "vqa-app"}

    def replicasets() -> dict[str, dict[str, Any]]:
        items = cluster.get_json("rs", "-n", "vqa", "-l", ",".join(f"{k}={v}" for k, v in selector.items()))
        return {rs["metadata"]["name"]: rs for rs in items["items"]}

    [old] = [name for name, rs in replicasets().items() if rs["spec"]["replicas"] > 0]
    second = deployed.apply("vqa_image_tag=4243")
    assert second.returncode == 0, f"ansible-playbook failed:\n{second.stdout[-6000:]}\n{second.stderr[-3000:]}"
    after = replicasets()
    [new] = [name for name, rs in after.items() if rs["spec"]["template"]["spec"]["containers"][0]["image"]
             == "vqa-app:4243"]
    assert new != old and after[old]["spec"]["replicas"] == 0 and after[old]["status"].get("replicas", 0) == 0
    assert after[new]["status"].get("readyReplicas") == after[new]["spec"]["replicas"] >= 1
    new_hash = after[new]["metadata"]["labels"]["pod-template-hash"]

    def only_new_pods() -> list[dict[str, Any]] | None:
        pods = pods_of(cluster, "vqa", selector)
        return pods if pods and {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {new_hash} else None

    pods = wait_for("the old ReplicaSet's pods to be gone", only_new_pods)
    assert all(is_ready(p) and p["spec"]["containers"][0]["image"] == "vqa-app:4243" for p in pods)
    assert ADMIN_TOKEN not in second.stdout + second.stderr
    assert secret_value(cluster, "vqa", "vqa-secrets", "VQA_ADMIN_TOKEN") == ADMIN_TOKEN
    assert secret_value(cluster, "vqa", "vqa-watchdog-secrets", "JENKINS_API_TOKEN") == JENKINS_TOKEN


def hpa_table(cluster: KubeCluster) -> str:
    """`kubectl get hpa` as a user sees it."""
    return cluster.kubectl("get", "hpa", "vqa-app", "-n", "vqa").stdout


def role_default(role: str, name: str):
    """A variable's default in `playbooks/roles/<role>/defaults/main.yml`."""
    return yaml.safe_load((REPO_ROOT / "playbooks" / "roles" / role / "defaults" / "main.yml").read_text())[name]


HPA_TARGET = int(role_default("vqa_deploy", "vqa_deploy_hpa_cpu_utilization"))


def cpu_percent(table: str) -> int | None:
    """The current CPU utilisation in a `kubectl get hpa` table (`cpu: 200%/120%`); None while `<unknown>`."""
    found = re.search(rf"cpu: (\d+)%/{HPA_TARGET}%", table)
    return int(found[1]) if found else None


def rescales(cluster: KubeCluster) -> list[str]:
    """The HPA's SuccessfulRescale event messages, e.g. `New size: 4; reason: cpu resource utilization
    (percentage of request) above target`."""
    events = cluster.get_json("events", "-n", "vqa", "--field-selector",
                              "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=vqa-app")
    return [e["message"] for e in events["items"] if e["reason"] == "SuccessfulRescale"]


def replicas(cluster: KubeCluster) -> int:
    return cluster.get_json("deployment", "vqa-app", "-n", "vqa")["spec"]["replicas"]


@pytest.mark.slow
def test_hpa_reads_cpu_and_scales_the_service_up_under_load_and_back_down(deployed: Deployed) -> None:
    """The HPA shows a CPU percentage; usage above the role's target scales 1 -> 2+, and it returns to 1 after."""
    cluster = deployed.cluster
    table = wait_for("a CPU percentage in `kubectl get hpa`",
                     lambda: cpu_percent(t := hpa_table(cluster)) is not None and t)
    assert "<unknown>" not in table and replicas(cluster) == 1, table
    [pod] = [p for p in pods_of(cluster, "vqa", {"app.kubernetes.io/name": "vqa-app"})
             if p["metadata"].get("deletionTimestamp") is None]
    # kwok reports this as the pod's CPU: twice the target, of the role's CPU request (in millicores).
    request = role_default("vqa_deploy", "vqa_deploy_cpu_request")
    request_m = int(str(request)[:-1]) if str(request).endswith("m") else int(float(request) * 1000)
    usage = f"{2 * HPA_TARGET * request_m // 100}m"
    cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", "vqa", f"kwok.x-k8s.io/usage-cpu={usage}")
    up = wait_for("a scale-up", lambda: [e for e in rescales(cluster) if "above target" in e])
    assert replicas(cluster) >= 2, up
    cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", "vqa", "kwok.x-k8s.io/usage-cpu-")
    down = wait_for("the scale-down after the stabilisation window",
                    lambda: [e for e in rescales(cluster) if "New size: 1;" in e and "below target" in e])
    assert replicas(cluster) == 1, down
    hpa = cluster.get_json("hpa", "vqa-app", "-n", "vqa")
    conditions = {c["type"]: c["status"] for c in hpa["status"]["conditions"]}
    assert conditions["ScalingActive"] == "True", hpa["status"]
    table = hpa_table(cluster)
    assert (cpu_percent(table) is not None and cpu_percent(table) < HPA_TARGET), table

"""A real Kubernetes control plane on loopback for the tests and `make cluster`: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok (fake nodes) and metrics-server, built by infra.kube.build.

`KubeCluster(workdir).start()` writes a small PKI and an admin kubeconfig into `workdir`, starts each
process on a free 127.0.0.1 port (logs in `workdir/logs/`), registers a kwok node, two storage classes
with a pool of volumes, and the metrics API, and waits until all of them answer; `.stop()` ends them.

    python -m infra.kube.cluster run [--workdir .cache/kube/cluster]      (Ctrl-C stops it)

Pods never run: kwok marks them Running and Ready on its node and reports the CPU an annotation asks for
(`kwok.x-k8s.io/usage-cpu: 400m`), which metrics-server serves to the HPA controller. Claims bind to
pre-created volumes: the default class `standard` and the class `premium` are `no-provisioner` classes
with Immediate binding, and the real PersistentVolume controller binds each claim to a free volume.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.kube.build import CACHE_ROOT, COMPONENTS, bin_dir, build, kubernetes_version, kwok_config_dir

DEFAULT_WORKDIR = CACHE_ROOT / "cluster"
NODE_NAME = "kwok-node-0"
DEFAULT_STORAGE_CLASS = "standard"
EXTRA_STORAGE_CLASS = "premium"
POD_CIDR = "10.244.0.1/16"
SERVICE_CIDR = "10.96.0.0/16"
METRICS_APISERVICE = "v1beta1.metrics.k8s.io"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The test cluster could not start (or a process died); the message carries the process's log tail."""


@dataclass(frozen=True)
class ClusterOptions:
    """Knobs the tests turn; the defaults are Kubernetes' own where it has one.

    hpa_sync_period / hpa_downscale_stabilization: kube-controller-manager's
    --horizontal-pod-autoscaler-sync-period and --horizontal-pod-autoscaler-downscale-stabilization.
    metric_resolution: how often metrics-server scrapes kwok (above 10 s: a CPU rate needs two samples).
    volumes_per_class: size of the pre-created volume pool of each storage class.
    """

    hpa_sync_period: str = "15s"
    hpa_downscale_stabilization: str = "5m0s"
    metric_resolution: str = "15s"
    volumes_per_class: int = 6
    volume_size: str = "20Gi"
    node_cpu: str = "16"
    node_memory: str = "64Gi"


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


# --- certificates -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The cluster's CA, the front-proxy CA and their leaf certificates, as PEM files in one folder."""

    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    @classmethod
    def create(cls, root: Path) -> Pki:
        """One CA for serving and client certificates, one for the aggregator's front proxy, a
        service-account signing key. ECDSA P-256: fast to make, accepted by every component."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        root.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

        def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        def name(cn: str, org: str | None = None) -> x509.Name:
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            return x509.Name(attrs)

        def issue(stem: str, cn: str, signer: tuple[Any, Any] | None, *, org: str | None = None,
                  server: bool = False, client: bool = False) -> tuple[Any, Any]:
            key = ec.generate_private_key(ec.SECP256R1())
            issuer_cert, issuer_key = signer if signer else (None, key)
            builder = (x509.CertificateBuilder().subject_name(name(cn, org))
                       .issuer_name(issuer_cert.subject if issuer_cert else name(cn, org))
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365)))
            if signer is None:
                builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                builder = builder.add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                    decipher_only=False), critical=True)
            else:
                usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
                    [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
                builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                if server:
                    import ipaddress

                    builder = builder.add_extension(x509.SubjectAlternativeName([
                        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("kubernetes.default.svc"),
                        # the aggregator checks an APIService's server as <service>.<namespace>.svc
                        x509.DNSName("metrics-server.kube-system.svc")]), critical=False)
            cert = builder.sign(issuer_key, hashes.SHA256())
            (root / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            (root / f"{stem}.key").write_bytes(key_pem(key))
            os.chmod(root / f"{stem}.key", 0o600)
            return cert, key

        ca = issue("ca", "vqa-test-cluster-ca", None)
        front_proxy_ca = issue("front-proxy-ca", "vqa-test-front-proxy-ca", None)
        issue("serving", "127.0.0.1", ca, server=True)
        issue("admin", "vqa-test-admin", ca, org="system:masters", client=True)
        issue("front-proxy-client", "front-proxy-client", front_proxy_ca, client=True)
        sa = ec.generate_private_key(ec.SECP256R1())
        (root / "sa.key").write_bytes(key_pem(sa))
        (root / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(root)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the cluster CA and presents the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.path("ca.crt")))
        ctx.load_cert_chain(str(self.path("admin.crt")), str(self.path("admin.key")))
        return ctx


def write_kubeconfig(path: Path, server: str, pki: Pki, *, name: str = "vqa-test") -> Path:
    """A kubeconfig with the certificates inlined, so it works from any folder."""

    def b64(file: str) -> str:
        return base64.b64encode(pki.path(file).read_bytes()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": f"{name}-admin", "user": {"client-certificate-data": b64("admin.crt"),
                                                     "client-key-data": b64("admin.key")}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
    }
    path.write_text(json.dumps(config, indent=2))
    os.chmod(path, 0o600)
    return path


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            # Own session: Ctrl-C in `make cluster` reaches Python, which then stops these in order.
            self.proc = subprocess.Popen(self.cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def check(self) -> None:
        if self.proc is not None and not self.alive():
            raise ClusterError(f"{self.name} exited with {self.proc.returncode}; {self.log_path} ends with:\n"
                               f"{self.tail()}")

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s after SIGTERM; killing it", self.name, STOP_TIMEOUT)
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


@dataclass
class KubeCluster:
    """The control plane and its fake node, in `workdir` (certificates, kubeconfig, etcd data, logs)."""

    workdir: Path
    options: ClusterOptions = field(default_factory=ClusterOptions)
    bin: Path = field(default_factory=bin_dir)
    processes: list[Process] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def pki(self) -> Pki:
        return Pki(self.workdir / "pki")

    @property
    def version(self) -> str:
        return kubernetes_version()

    # -- lifecycle
    def start(self) -> KubeCluster:
        started = time.monotonic()
        missing = [b for c in COMPONENTS for b in c.binaries if not (self.bin / b).is_file()]
        if missing:
            raise ClusterError(f"{', '.join(missing)} not built in {self.bin}: run `python -m infra.kube.build`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("etcd-data", "logs"):  # a workdir is reused by `make cluster`: start from an empty store
            shutil.rmtree(self.workdir / stale, ignore_errors=True)
        pki = Pki.create(self.workdir / "pki")
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok", "metrics-server")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        write_kubeconfig(self.kubeconfig, self.server, pki)
        atexit.register(self.stop)
        try:
            self._start_etcd()
            self._start_apiserver(pki)
            self._start_controllers()
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info("Kubernetes %s test cluster ready in %.1f s: KUBECONFIG=%s", self.version, self.startup_seconds,
                 self.kubeconfig)
        return self

    def stop(self) -> None:
        """Stop every process, newest first (the controllers before the API server before etcd)."""
        started = time.monotonic()
        for process in reversed(self.processes):
            process.stop()
        if self.processes:
            log.info("test cluster stopped in %.1f s", time.monotonic() - started)
        self.processes.clear()
        atexit.unregister(self.stop)

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        """Raise ClusterError if any process has died."""
        for process in self.processes:
            process.check()

    # -- helpers for tests and users
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment pointing kubectl, the kubernetes client and kubernetes.core at this cluster."""
        env = dict(os.environ if base is None else base)
        for var in ("K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT", "K8S_AUTH_HOST", "K8S_AUTH_API_KEY"):
            env.pop(var, None)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the harness's kubectl against this cluster (own discovery cache, so a new cluster is never
        answered from an old one's)."""
        cmd = [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig),
               "--cache-dir", str(self.workdir / "kubectl-cache"), *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise ClusterError(f"`kubectl {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                            "items": list(objects)}))

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    # -- the steps of start()
    def _launch(self, name: str, cmd: Sequence[str]) -> Process:
        process = Process(name, [str(c) for c in cmd], self.workdir / "logs" / f"{name}.log")
        process.start(self.workdir)
        self.processes.append(process)
        return process

    def _wait(self, what: str, ready: Any, timeout: float = START_TIMEOUT) -> None:
        """Poll `ready()` (truthy = done) until `timeout`, failing early if a process died."""
        deadline, last = time.monotonic() + timeout, "not ready"
        while True:
            self.check()
            try:
                if ready():
                    return
            except (OSError, ClusterError, urllib.error.URLError, ValueError) as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in self.processes)
                raise ClusterError(f"{what} not ready after {timeout:.0f} s ({last}); logs:\n{tails}")
            time.sleep(0.5)

    def _https_ok(self, port: int, path: str) -> bool:
        url = f"https://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, context=self.pki.ssl_context(), timeout=5) as response:
            return response.status == 200

    def _start_etcd(self) -> None:
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._launch("etcd", [
            self.bin / "etcd", "--name", "vqa-test", "--data-dir", self.workdir / "etcd-data",
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls",
            f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"vqa-test=http://127.0.0.1:{peer}",
            # a throwaway store: skipping fsync makes the API server's writes cheap on a shared disk
            "--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", str(2 * 2**30)])

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=5) as response:
                return json.load(response).get("health") == "true"

        self._wait("etcd", healthy)

    def _start_apiserver(self, pki: Pki) -> None:
        p = pki.path
        self._launch("kube-apiserver", [
            self.bin / "kube-apiserver", f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={p('serving.crt')}", f"--tls-private-key-file={p('serving.key')}",
            f"--client-ca-file={p('ca.crt')}", "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p('sa.pub')}", f"--service-account-signing-key-file={p('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # No real endpoints: 127.0.0.1 is not a valid endpoint address for the `kubernetes` Service.
            "--endpoint-reconciler-type=none",
            # The aggregation layer (front proxy) that serves metrics.k8s.io from metrics-server.
            f"--requestheader-client-ca-file={p('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p('front-proxy-client.crt')}",
            f"--proxy-client-key-file={p('front-proxy-client.key')}",
            "--profiling=false"])
        self._wait("kube-apiserver", lambda: self._https_ok(self.ports["apiserver"], "/readyz"))

    def _start_controllers(self) -> None:
        kubeconfig, p, o = self.kubeconfig, self.pki.path, self.options
        common = [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                  f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                  f"--tls-cert-file={p('serving.crt')}", f"--tls-private-key-file={p('serving.key')}"]
        self._launch("kube-controller-manager", [
            self.bin / "kube-controller-manager", *common, "--leader-elect=false",
            f"--secure-port={self.ports['controller-manager']}",
            f"--service-account-private-key-file={p('sa.key')}", f"--root-ca-file={p('ca.crt')}",
            f"--cluster-signing-cert-file={p('ca.crt')}", f"--cluster-signing-key-file={p('ca.key')}",
            f"--horizontal-pod-autoscaler-sync-period={o.hpa_sync_period}",
            f"--horizontal-pod-autoscaler-downscale-stabilization={o.hpa_downscale_stabilization}",
            "--profiling=false"])
        self._launch("kube-scheduler", [
            self.bin / "kube-scheduler", *common, "--leader-elect=false", f"--secure-port={self.ports['scheduler']}",
            "--profiling=false"])
        share = kwok_config_dir(self.bin.parent)
        configs = sorted(share.glob("*.yaml"))
        if not configs:
            raise ClusterError(f"no kwok stage files in {share}: run `python -m infra.kube.build`")
        self._launch("kwok", [
            self.bin / "kwok", f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", f"--node-port={self.ports['kwok']}",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
            f"--tls-cert-file={p('serving.crt')}", f"--tls-private-key-file={p('serving.key')}",
            *(f"--config={c}" for c in configs)])
        self._launch("metrics-server", [
            self.bin / "metrics-server", *common, f"--secure-port={self.ports['metrics-server']}",
            # kwok's kubelet endpoint (our serving certificate), on the node's InternalIP and status port
            f"--kubelet-certificate-authority={p('ca.crt')}", "--kubelet-use-node-status-port",
            "--kubelet-preferred-address-types=InternalIP",
            f"--metric-resolution={o.metric_resolution}"])
        for name in ("controller-manager", "scheduler", "metrics-server"):
            self._wait(name, lambda port=self.ports[name]: self._https_ok(port, "/healthz"))

    def _bootstrap(self) -> None:
        o = self.options
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE_NAME, "annotations": {
                "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{NODE_NAME}/metrics/resource"},
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "status": {"allocatable": {"cpu": o.node_cpu, "memory": o.node_memory, "pods": "110"},
                       "capacity": {"cpu": o.node_cpu, "memory": o.node_memory, "pods": "110"}},
        }
        classes = [{
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true" if name == DEFAULT_STORAGE_CLASS else "false"}},
            # no dynamic provisioning: the PersistentVolume controller binds claims to the pool below at once
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Retain"} for name in (DEFAULT_STORAGE_CLASS, EXTRA_STORAGE_CLASS)]
        volumes = [{
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{cls}-{i}", "labels": {"app.kubernetes.io/managed-by": "vqa-test-cluster"}},
            "spec": {"storageClassName": cls, "capacity": {"storage": o.volume_size},
                     "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": f"/var/lib/kwok-volumes/{cls}-{i}"}}}
            for cls in (DEFAULT_STORAGE_CLASS, EXTRA_STORAGE_CLASS) for i in range(o.volumes_per_class)]
        port = self.ports["metrics-server"]
        metrics = [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "metrics-server", "namespace": "kube-system"},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": port, "targetPort": port}]}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": METRICS_APISERVICE},
             "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                      "versionPriority": 100, "service": {"name": "metrics-server", "namespace": "kube-system",
                                                           "port": port},
                      "caBundle": base64.b64encode(self.pki.path("ca.crt").read_bytes()).decode()}},
        ]
        self.apply(node, *classes, *volumes, *metrics)
        self._wait(f"node {NODE_NAME}", lambda: self._condition("node", NODE_NAME, "Ready"))
        self._wait("the metrics API", lambda: self._condition("apiservice", METRICS_APISERVICE, "Available"))
        # The service-account controller has made the default namespace's account: pods can be created.
        self._wait("the default ServiceAccount", lambda: self.kubectl("get", "serviceaccount", "default",
                                                                      check=False).returncode == 0)

    def _condition(self, kind: str, name: str, condition: str) -> bool:
        conditions = self.get_json(kind, name).get("status", {}).get("conditions", [])
        return any(c["type"] == condition and c["status"] == "True" for c in conditions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build if needed, start the cluster, keep it up until Ctrl-C")
    run.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default: {DEFAULT_WORKDIR}")
    run.add_argument("--hpa-downscale-stabilization", default=ClusterOptions.hpa_downscale_stabilization,
                     help="kube-controller-manager's HPA scale-down window (default: Kubernetes' 5m0s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build()
    cluster = KubeCluster(args.workdir, ClusterOptions(hpa_downscale_stabilization=args.hpa_downscale_stabilization))
    try:
        cluster.start()
    except ClusterError as exc:
        log.error("%s", exc)
        return 1
    print(f"\nexport KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin}:$PATH\nkubectl get nodes,storageclass\n"
          f"(logs in {cluster.workdir / 'logs'}; Ctrl-C stops the cluster)", flush=True)
    try:
        while True:
            time.sleep(2)
            cluster.check()
    except KeyboardInterrupt:
        log.info("stopping")
    except ClusterError as exc:
        log.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

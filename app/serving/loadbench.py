"""The load benchmark: the bare model at batch 1 and 16 against the service under `hey` at concurrency 1, 16 and 50.

`scripts/bench_load.py` is its command line; the ratios it prints are the targets of docs/BENCHMARKS.md.
`hey` (Debian package `hey`) generates the load: an existing, compiled load tool, so the client
does not compete with the service for the GIL or cost more CPU than it measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import requests

from app.config import REPO_ROOT, Settings
from app.events import schema as events
from app.learning.data import CSV_NAME, load_rows
from app.serving.floor import FLOOR_APP
from app.serving.images import load_image_file
from app.serving.launch import free_port, start_service, stop_service, wait_ready
from app.serving.metrics import BATCH_SIZE_METRIC, REBALANCED_METRIC, WORKER_REQUESTS_METRIC
from app.serving.worker import WORKER_CLASS

SEED_REQUEST = {"image_path": "test/5.png", "question": "what shape is in the image?"}


class LoadToolMissing(RuntimeError):
    """`hey` is not installed."""


@dataclass
class Level:
    """One load level: `hey` at `concurrency` for `seconds` against /predict."""

    workers: int
    concurrency: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    non_2xx: int  # answers with another status, plus requests that got no answer at all
    cpu_cores: float = float("nan")  # CPU the service's processes used meanwhile, in cores (Linux /proc)
    mean_batch: float = float("nan")  # requests per model call meanwhile (the service's vqa_batch_size histogram)
    memory_mib: float = float("nan")  # proportional set size (PSS) of gunicorn's master and workers after the level
    rebalanced: int = 0  # keep-alive connections closed to even out the workers meanwhile (app/serving/balance.py)
    spread: list[int] = field(default_factory=list)  # requests each worker took during the level, sorted
    balance: bool = True  # VQA_BALANCE_CONNECTIONS during the level


@dataclass
class Bare:
    """The model call alone (`VQAModel.answer`), batch by batch, in this process."""

    inputs: str
    threads: int
    batch: int
    requests_per_s: float
    p50_ms: float  # per call (one batch)
    p95_ms: float


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare_model(settings: Settings, *, threads: tuple[int, ...] = (1,), batches: tuple[int, ...] = (1, 16),
               n: int = 256, test_split: bool = True) -> list[Bare]:
    """Throughput and per-call latency of `VQAModel.answer` per PyTorch thread count and batch size, on the
    request the load test sends (`seed request`, n copies) and on n test-split questions (`test split`)."""
    import torch

    from app.model.vqa import VQAModel

    vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
    rows = load_rows(Path(settings.data_dir) / CSV_NAME, split="test").sample(n=n, random_state=0)
    seed_image = load_image_file(settings.images_root, SEED_REQUEST["image_path"])
    inputs = {"seed request": ([seed_image] * n, [SEED_REQUEST["question"]] * n)}
    if test_split:
        inputs["test split"] = ([load_image_file(settings.images_root, p) for p in rows["image_path"]],
                                rows["question"].tolist())
    before = torch.get_num_threads()
    out = []
    try:
        for count in threads:
            torch.set_num_threads(count)
            for name, (images, questions) in inputs.items():
                for size in batches:
                    vqa.answer(images[:size], questions[:size])  # warm up this shape
                    times = []
                    began = time.perf_counter()
                    for i in range(0, n, size):
                        t = time.perf_counter()
                        vqa.answer(images[i:i + size], questions[i:i + size])
                        times.append(time.perf_counter() - t)
                    elapsed = time.perf_counter() - began
                    out.append(Bare(name, count, size, round(n / elapsed, 1), round(1000 * statistics.median(times), 2),
                                    round(1000 * _pct(times, 0.95), 2)))
    finally:
        torch.set_num_threads(before)
    return out


def hey(url: str, body: dict, concurrency: int, seconds: float, *, workers: int = 1) -> Level:
    """Run `hey` against `url` and read req/s, p50, p95 and the non-2xx count from its summary."""
    exe = shutil.which("hey")
    if exe is None:
        raise LoadToolMissing("`hey` is not installed: `apt-get install -y hey` (Debian) or `go install "
                              "github.com/rakyll/hey@latest`")
    done = subprocess.run(
        [exe, "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
         "-d", json.dumps(body), "-t", "60", url],
        capture_output=True, text=True, check=True,
    )
    return parse_hey(done.stdout, workers=workers, concurrency=concurrency, seconds=seconds)


def parse_hey(summary: str, *, workers: int, concurrency: int, seconds: float) -> Level:
    """A `Level` from hey's text summary (its CSV output leaves out requests that failed)."""
    def latency(pct: int) -> float:
        found = re.search(rf"^\s*{pct}% in ([\d.]+) secs", summary, re.M)
        return round(1000 * float(found.group(1)), 2) if found else float("nan")

    rps = re.search(r"Requests/sec:\s*([\d.]+)", summary)
    codes = {int(c): int(n) for c, n in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", summary, re.M)}
    errors_block = summary.split("Error distribution:", 1)[1] if "Error distribution:" in summary else ""
    errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", errors_block, re.M))
    return Level(workers, concurrency, seconds, round(float(rps.group(1)), 1) if rps else 0.0, latency(50),
                 latency(95), sum(n for c, n in codes.items() if not 200 <= c < 300) + errors)


class BareProbe:
    """The bare model in this process, measured in short spells that alternate with the service's."""

    def __init__(self, settings: Settings, *, b1_threads: int, b16_threads: int):
        from app.model.vqa import VQAModel

        self.vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
        self.image = load_image_file(settings.images_root, SEED_REQUEST["image_path"])
        self.b1_threads, self.b16_threads = b1_threads, b16_threads

    def _spell(self, batch: int, threads: int, seconds: float) -> list[float]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            times, until = [], time.monotonic() + seconds
            while time.monotonic() < until:
                t = time.perf_counter()
                self.vqa.answer([self.image] * batch, [SEED_REQUEST["question"]] * batch)
                times.append(time.perf_counter() - t)
        finally:
            torch.set_num_threads(before)
        return times

    def b1_p50(self, seconds: float) -> float:
        """p50 in ms of one seed request at a time."""
        return 1000 * statistics.median(self._spell(1, self.b1_threads, seconds))

    def b16_throughput(self, seconds: float) -> float:
        """Requests per second in batches of 16 seed requests."""
        times = self._spell(16, self.b16_threads, seconds)
        return 16 * len(times) / sum(times)


@dataclass
class Paired:
    """Rounds that alternate 2 s of the bare model with 2 s of the service, so the host's drift hits both.

    Per round: c1 p50 minus bare batch-1 p50 (ms) and the part of it inside the worker; c16 throughput
    over bare batch-16 throughput; c16 p95 over c1 p50. With reference servers (`reference_servers`), also
    each one's c1 p50 minus bare batch-1 p50, by name.
    """

    c1_ms: list[float] = field(default_factory=list)
    c1_in_worker_ms: list[float] = field(default_factory=list)
    c1_references_ms: dict[str, list[float]] = field(default_factory=dict)
    ceiling: list[float] = field(default_factory=list)
    p95_16_over_p50_1: list[float] = field(default_factory=list)


def paired_rounds(probe: BareProbe, url: str, log_path: Path, workers: int, rounds: int,
                  seconds: float = 2.0, references: dict[str, str] | None = None) -> Paired:
    """`rounds` of: bare batch 1, hey c1, bare batch 16, hey c16 (each `seconds`).

    With `references` (name: /predict URL), each round also runs hey c1 on each. The order of the
    service's c1 and the references' rotates from round to round, so none always follows the bare model.
    """
    references = references or {}
    out = Paired(c1_references_ms={name: [] for name in references})
    targets = [None, *references]  # None: the service
    for index in range(rounds):
        bare_p50 = probe.b1_p50(seconds)
        turn = index % len(targets)
        for name in targets[turn:] + targets[:turn]:
            if name is not None:
                p50 = hey(references[name], SEED_REQUEST, 1, seconds).p50_ms
                out.c1_references_ms[name].append(round(p50 - bare_p50, 2))
                continue
            offset = log_path.stat().st_size
            c1 = hey(url, SEED_REQUEST, 1, seconds, workers=workers)
            out.c1_ms.append(round(c1.p50_ms - bare_p50, 2))
            out.c1_in_worker_ms.append(round(event_latency_p50(log_path, offset) - bare_p50, 2))
        bare_rps = probe.b16_throughput(seconds)
        c16 = hey(url, SEED_REQUEST, 16, seconds, workers=workers)
        out.ceiling.append(round(c16.requests_per_s / bare_rps, 3))
        out.p95_16_over_p50_1.append(round(c16.p95_ms / c1.p50_ms, 2))
    return out


def load_levels(settings: Settings, workers: int, levels: list[tuple[int, float]], *,
                probe: BareProbe | None = None, rounds: int = 10, references: dict[str, str] | None = None,
                log: Callable[[str], None] = print) -> tuple[list[Level], Paired]:
    """Start gunicorn with `workers` workers (event shipping off), warm it up, then run each (concurrency, seconds).

    With `probe`, first `rounds` paired rounds (`paired_rounds`): the host's speed drifts by tens of
    percent within minutes here, and alternating 2 s spells compares the service with the model at the
    same moment. The inside-the-worker part of the c1 difference is the p50 of the round's events'
    `latency_seconds` (from request parsing to the answer) minus the bare p50; the rest is HTTP.
    """
    with tempfile.TemporaryDirectory(prefix="vqa-bench-") as tmp:
        port = free_port()
        env = {**settings.to_env(), "ES_URL": "", "WEB_CONCURRENCY": str(workers), "VQA_SPOOL_DIR": f"{tmp}/spool"}
        log_path = Path(tmp) / "gunicorn.log"
        proc = start_service(env, port, log_path=log_path, timeout=180)
        url = f"http://127.0.0.1:{port}/predict"
        try:
            _warm_up(url, workers)
            paired = paired_rounds(probe, url, log_path, workers, rounds, references=references) if probe else Paired()
            if probe:
                log(f"  {rounds} paired rounds (2 s bare, 2 s service, alternating):")
                log(f"    c1 p50 minus bare batch-1 p50: {paired.c1_ms} ms")
                log(f"    of which inside the worker (events' latency_seconds p50 minus bare): "
                    f"{paired.c1_in_worker_ms} ms; the rest is HTTP (gunicorn, loopback, hey)")
                for name, diffs in paired.c1_references_ms.items():
                    log(f"    {name}: c1 p50 minus bare batch-1 p50: {diffs} ms")
                log(f"    c16 throughput / bare batch-16 throughput: {paired.ceiling}")
                log(f"    c16 p95 / c1 p50: {paired.p95_16_over_p50_1}")
            out = []
            for concurrency, seconds in levels:
                text = scrape(url)
                before, taken_before = parse_service_totals(text), parse_worker_requests(text)
                cpu_before, began = cpu_seconds(proc.pid), time.monotonic()
                level = hey(url, SEED_REQUEST, concurrency, seconds, workers=workers)
                level.cpu_cores = round((cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - began), 2)
                text = scrape(url)
                after, level.spread = parse_service_totals(text), spread(taken_before, parse_worker_requests(text))
                answered, calls = (after[k] - before[k] for k in ("answered", "calls"))
                if calls > 0:
                    level.mean_batch = round(answered / calls, 1)
                level.rebalanced = int(after["rebalanced"] - before["rebalanced"])
                level.balance = settings.balance_connections
                level.memory_mib = round(pss_mib(proc.pid))
                log(f"  {workers} worker(s), c{concurrency:<3} {level.requests_per_s:7.1f} req/s  "
                    f"p50 {level.p50_ms:7.2f} ms  p95 {level.p95_ms:7.2f} ms  non-2xx {level.non_2xx}  "
                    f"CPU {level.cpu_cores:.2f} cores  mean batch {level.mean_batch}  PSS {level.memory_mib:.0f} MiB  "
                    f"connections closed to rebalance {level.rebalanced}, requests per worker {level.spread}")
                out.append(level)
            return out, paired
        finally:
            stop_service(proc)


@contextlib.contextmanager
def reference_servers(settings: Settings) -> Iterator[dict[str, str]]:
    """What the paired rounds set beside the service at c1, ready; yields {name: /predict URL}.

    - `flask floor`: app/serving/floor.py's Flask app under gunicorn, one worker of the service's class
      and thread count, without the service's settings file;
    - `stdlib floor`: `python -m app.serving.floor` (http.server);
    - `service, lingering off`: the service itself, one worker, with VQA_KEEPALIVE_LINGER_MS=0, to show
      what app/serving/worker.py's lingering does.
    """
    env = {**os.environ, **settings.to_env(), "ES_URL": ""}
    with tempfile.TemporaryDirectory(prefix="vqa-refs-") as tmp, contextlib.ExitStack() as stack:
        flask_port, stdlib_port, service_port = free_port(), free_port(), free_port()
        flask = start_service(env, flask_port, log_path=Path(tmp) / "flask.log", timeout=180, app_spec=FLOOR_APP,
                              config=None, extra_args=["-w", "1", "-k", WORKER_CLASS,
                                                       "--threads", str(settings.gunicorn_threads)])
        stack.callback(stop_service, flask)
        service = start_service({**env, "WEB_CONCURRENCY": "1", "VQA_KEEPALIVE_LINGER_MS": "0",
                                 "VQA_SPOOL_DIR": f"{tmp}/spool"}, service_port,
                                log_path=Path(tmp) / "service.log", timeout=180)
        stack.callback(stop_service, service)
        with (Path(tmp) / "stdlib.log").open("w") as out:
            stdlib = subprocess.Popen([sys.executable, "-m", "app.serving.floor", "--port", str(stdlib_port)],
                                      cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(stop_service, stdlib)
        wait_ready(f"http://127.0.0.1:{stdlib_port}", stdlib, 180, Path(tmp) / "stdlib.log")
        _warm_up(f"http://127.0.0.1:{service_port}/predict", 1)
        yield {"flask floor": f"http://127.0.0.1:{flask_port}/predict",
               "stdlib floor": f"http://127.0.0.1:{stdlib_port}/predict",
               "service, lingering off": f"http://127.0.0.1:{service_port}/predict"}


def event_latency_p50(log_path: Path, offset: int) -> float:
    """p50, in ms, of `latency_seconds` over the inference LOG_EVENTs written to `log_path` after byte `offset`."""
    with log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    found = [doc[events.LATENCY_SECONDS] for doc in map(events.parse_line, lines)
             if doc is not None and doc.get(events.EVENT) == events.INFERENCE]
    return round(1000 * statistics.median(found), 2) if found else float("nan")


def scrape(predict_url: str) -> str:
    """The service's /metrics, fetched on a connection of its own that is closed after it."""
    return requests.get(predict_url.rsplit("/", 1)[0] + "/metrics", timeout=30, headers={"Connection": "close"}).text


def parse_service_totals(metrics_text: str) -> dict[str, float]:
    """From a Prometheus text exposition: `answered` and `calls`, the sum and count of the `vqa_batch_size`
    histogram, and `rebalanced`, the connections-rebalanced counter (0 where absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {sample.name: sample.value for family in text_string_to_metric_families(metrics_text)
               for sample in family.samples}
    return {"answered": samples.get(f"{BATCH_SIZE_METRIC}_sum", 0.0),
            "calls": samples.get(f"{BATCH_SIZE_METRIC}_count", 0.0),
            "rebalanced": samples.get(f"{REBALANCED_METRIC}_total", 0.0)}


def parse_worker_requests(metrics_text: str) -> dict[str, float]:
    """{pid: requests taken} from the `vqa_worker_requests` gauge, one sample per live worker."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.labels.get("pid", ""): sample.value for family in text_string_to_metric_families(metrics_text)
            if family.name == WORKER_REQUESTS_METRIC for sample in family.samples}


def spread(before: dict[str, float], after: dict[str, float]) -> list[int]:
    """Requests each live worker took between two scrapes, sorted (a worker forked meanwhile started at 0)."""
    return sorted(int(after[pid] - before.get(pid, 0.0)) for pid in after)


def _family(root: int) -> list[int]:
    """Process `root` and its children (gunicorn's master and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if int(entry.name) == root or ppid == root:
            pids.append(int(entry.name))
    return pids


def pss_mib(root: int) -> float:
    """Proportional set size of process `root` and its children, in MiB (Linux smaps_rollup): shared pages
    (the model's read-only file mappings, libraries) are split between the processes that map them."""
    total_kib = 0
    for pid in _family(root):
        try:
            found = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
        except OSError:
            continue
        total_kib += int(found.group(1)) if found else 0
    return total_kib / 1024


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and its children so far (gunicorn's master and workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _family(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _warm_up(url: str, workers: int) -> None:
    """Until every worker has loaded its model (a 503 means one has not), then a short burst."""
    deadline = time.monotonic() + 180
    with requests.Session() as http:
        while time.monotonic() < deadline:
            codes = [http.post(url, json=SEED_REQUEST, timeout=60, headers={"Connection": "close"}).status_code
                     for _ in range(4 * workers)]
            if all(c == 200 for c in codes):
                break
            time.sleep(0.5)
    hey(url, SEED_REQUEST, 16, 3)


def ratios(bare: list[Bare], levels: list[Level], paired: Paired | None = None) -> dict[str, float]:
    """The issue's four numbers. The reference is the bare model on the request the load test sends, at its
    best thread count (highest batch-16 throughput, lowest batch-1 p50), so no ratio flatters the service.
    With `paired` rounds, the median of each paired ratio follows the one from the levels."""
    seed = [b for b in bare if b.inputs == "seed request"]
    best16 = max((b for b in seed if b.batch == 16), key=lambda b: b.requests_per_s)
    best1 = min((b for b in seed if b.batch == 1), key=lambda b: b.p50_ms)
    at = {level.concurrency: level for level in levels}

    out: dict[str, float] = {"ceiling ratio": round(at[16].requests_per_s / best16.requests_per_s, 3)}
    if paired and paired.ceiling:
        out["ceiling ratio, paired rounds, median"] = round(statistics.median(paired.ceiling), 3)
    out["p95@16 / p50@1"] = round(at[16].p95_ms / at[1].p50_ms, 2)
    if paired and paired.p95_16_over_p50_1:
        out["p95@16 / p50@1, paired rounds, median"] = round(statistics.median(paired.p95_16_over_p50_1), 2)
    out["p50@1 - bare batch-1 p50 (ms)"] = round(at[1].p50_ms - best1.p50_ms, 2)
    if paired and paired.c1_ms:
        out["p50@1 - bare batch-1 p50, paired rounds, median (ms)"] = round(statistics.median(paired.c1_ms), 2)
    for name, diffs in (paired.c1_references_ms if paired else {}).items():
        if diffs:
            out[f"{name} p50@1 - bare batch-1 p50, paired rounds, median (ms)"] = round(
                statistics.median(diffs), 2)
            out[f"p50@1 - {name} p50@1, paired rounds, median (ms)"] = round(
                statistics.median(c - f for c, f in zip(paired.c1_ms, diffs, strict=True)), 2)
    out["non-2xx at c50"] = at[50].non_2xx
    return out


def run(settings: Settings, *, seconds: float = 20.0, c50_seconds: float = 60.0, workers: tuple[int, ...] = (1, 2),
        unbalanced_runs: int = 3, rounds: int = 10, log: Callable[[str], None] = print) -> dict:
    """The whole benchmark; returns (and logs) every measurement and the ratios per worker count.

    With several workers it then runs c16 `unbalanced_runs` times with VQA_BALANCE_CONNECTIONS=0,
    the comparison for app/serving/balance.py.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = tuple(sorted({1, cores}))
    log(f"bare model (VQAModel.answer in this process, PyTorch threads {', '.join(map(str, threads))}):")
    bare = bare_model(settings, threads=threads)
    for b in bare:
        log(f"  {b.inputs:<12} {b.threads} thread(s) batch {b.batch:<3} {b.requests_per_s:7.1f} req/s  "
            f"p50 {b.p50_ms:7.2f} ms/call  p95 {b.p95_ms:7.2f} ms/call")
    result: dict = {"bare": [asdict(b) for b in bare], "service": {}, "paired": {}, "ratios": {}, "unbalanced_c16": {}}
    seed = [b for b in bare if b.inputs == "seed request"]
    probe = BareProbe(settings, b1_threads=min((b for b in seed if b.batch == 1), key=lambda b: b.p50_ms).threads,
                      b16_threads=max((b for b in seed if b.batch == 16), key=lambda b: b.requests_per_s).threads)
    # The reference servers run throughout, idle except in the paired rounds: their c1 next to the
    # service's separates what a server, the loopback and hey cost here from what the service's path adds.
    with reference_servers(settings) as references:
        for count in workers:
            # The machine's other load drifts: measure the bare model again right before each service run,
            # and compare with the best of all bare runs.
            again = bare_model(settings, threads=(settings.torch_threads or 1,), n=128, test_split=False)
            for b in again:
                log(f"  bare again: {b.threads} thread(s) batch {b.batch:<3} {b.requests_per_s:7.1f} req/s  "
                    f"p50 {b.p50_ms:7.2f} ms/call")
            bare += again
            result["bare"] += [asdict(b) for b in again]
            log(f"service, {count} worker(s) ({settings.torch_threads or 1} PyTorch thread each), "
                f"hey on {SEED_REQUEST}:")
            levels, paired = load_levels(settings, count, [(1, seconds), (16, seconds), (50, c50_seconds)],
                                         probe=probe, rounds=rounds, references=references, log=log)
            result["service"][count] = [asdict(level) for level in levels]
            result["paired"][count] = asdict(paired)
            result["ratios"][count] = ratios(bare, levels, paired)
            for name, value in result["ratios"][count].items():
                log(f"  {name}: {value}")
            if count > 1 and unbalanced_runs:
                # The same c16 with gunicorn's own spread: each hey run opens fresh connections, a new draw.
                log(f"service, {count} worker(s), VQA_BALANCE_CONNECTIONS=0, c16 {unbalanced_runs} times:")
                off, _ = load_levels(replace(settings, balance_connections=False), count,
                                     [(16, seconds)] * unbalanced_runs, log=log)
                result["unbalanced_c16"][count] = [asdict(level) for level in off]
    return result

"""The load benchmark: the bare model at batch 1 and 16 against the service under `hey` at concurrency 1, 16 and 50.

`scripts/bench_load.py` is its command line; the ratios it prints are the targets of docs/BENCHMARKS.md.
`hey` (Debian package `hey`) generates the load: an existing, compiled load tool, so the client
does not compete with the service for the GIL or cost more CPU than it measures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from app.config import Settings
from app.events import schema as events
from app.learning.data import CSV_NAME, load_rows
from app.serving.images import load_image_file
from app.serving.launch import free_port, start_service, stop_service
from app.serving.metrics import BATCH_SIZE_METRIC

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


def bare_b1_p50(settings: Settings, threads: int) -> Callable[[float], float]:
    """A function that calls the bare model on the seed request for `seconds` and returns its p50 in ms."""
    import torch

    from app.model.vqa import VQAModel

    vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
    image, question = load_image_file(settings.images_root, SEED_REQUEST["image_path"]), SEED_REQUEST["question"]

    def measure(seconds: float) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            times, until = [], time.monotonic() + seconds
            while time.monotonic() < until:
                t = time.perf_counter()
                vqa.answer([image], [question])
                times.append(time.perf_counter() - t)
        finally:
            torch.set_num_threads(before)
        return 1000 * statistics.median(times)

    return measure


def load_levels(settings: Settings, workers: int, levels: list[tuple[int, float]], *,
                paired: Callable[[float], float] | None = None, rounds: int = 6,
                log: Callable[[str], None] = print) -> tuple[list[Level], list[float], list[float]]:
    """Start gunicorn with `workers` workers (event shipping off), warm it up, then run each (concurrency, seconds).

    With `paired` (a bare batch-1 p50 measurement), first alternate `rounds` of 2 s of it with 2 s of hey
    at c1: the differences of the p50s are what HTTP adds, with the machine's other load hitting both alike.
    Returns the levels, those differences, and the part of each spent inside the worker (the p50 of the
    round's events' `latency_seconds`, from request parsing to the answer, minus the bare p50).
    """
    with tempfile.TemporaryDirectory(prefix="vqa-bench-") as tmp:
        port = free_port()
        env = {**settings.to_env(), "ES_URL": "", "WEB_CONCURRENCY": str(workers), "VQA_SPOOL_DIR": f"{tmp}/spool"}
        log_path = Path(tmp) / "gunicorn.log"
        proc = start_service(env, port, log_path=log_path, timeout=180)
        url = f"http://127.0.0.1:{port}/predict"
        try:
            _warm_up(url, workers)
            diffs, inside = [], []
            for _ in range(rounds if paired else 0):
                bare_p50 = paired(2.0)
                offset = log_path.stat().st_size
                diffs.append(round(hey(url, SEED_REQUEST, 1, 2.0, workers=workers).p50_ms - bare_p50, 2))
                inside.append(round(event_latency_p50(log_path, offset) - bare_p50, 2))
            if diffs:
                log(f"  c1 p50 minus bare batch-1 p50, {len(diffs)} alternating 2 s rounds: {diffs} ms")
                log(f"  of which inside the worker (the events' latency_seconds p50 minus bare): {inside} ms; "
                    "the rest is HTTP (gunicorn, loopback, hey)")
            out = []
            for concurrency, seconds in levels:
                answered_before, calls_before = batch_totals(url)
                cpu_before, began = cpu_seconds(proc.pid), time.monotonic()
                level = hey(url, SEED_REQUEST, concurrency, seconds, workers=workers)
                level.cpu_cores = round((cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - began), 2)
                answered, calls = batch_totals(url)
                if calls > calls_before:
                    level.mean_batch = round((answered - answered_before) / (calls - calls_before), 1)
                level.memory_mib = round(pss_mib(proc.pid))
                log(f"  {workers} worker(s), c{concurrency:<3} {level.requests_per_s:7.1f} req/s  "
                    f"p50 {level.p50_ms:7.2f} ms  p95 {level.p95_ms:7.2f} ms  non-2xx {level.non_2xx}  "
                    f"CPU {level.cpu_cores:.2f} cores  mean batch {level.mean_batch}  PSS {level.memory_mib:.0f} MiB")
                out.append(level)
            return out, diffs, inside
        finally:
            stop_service(proc)


def event_latency_p50(log_path: Path, offset: int) -> float:
    """p50, in ms, of `latency_seconds` over the inference LOG_EVENTs written to `log_path` after byte `offset`."""
    with log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    found = [doc[events.LATENCY_SECONDS] for doc in map(events.parse_line, lines)
             if doc is not None and doc.get(events.EVENT) == events.INFERENCE]
    return round(1000 * statistics.median(found), 2) if found else float("nan")


def batch_totals(predict_url: str) -> tuple[float, float]:
    """(requests answered, model calls) so far, summed over the workers, from the service's /metrics."""
    return parse_batch_totals(requests.get(predict_url.rsplit("/", 1)[0] + "/metrics", timeout=30).text)


def parse_batch_totals(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the `vqa_batch_size` histogram in a Prometheus text exposition ((0, 0) if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {sample.name: sample.value for family in text_string_to_metric_families(metrics_text)
               if family.name == BATCH_SIZE_METRIC for sample in family.samples}
    return samples.get(f"{BATCH_SIZE_METRIC}_sum", 0.0), samples.get(f"{BATCH_SIZE_METRIC}_count", 0.0)


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


def ratios(bare: list[Bare], levels: list[Level], paired: list[float] | None = None) -> dict[str, float]:
    """The issue's four numbers. The reference is the bare model on the request the load test sends, at its
    best thread count (highest batch-16 throughput, lowest batch-1 p50), so no ratio flatters the service.
    `paired`: differences of c1 and bare p50 measured in alternation (their median is reported too)."""
    seed = [b for b in bare if b.inputs == "seed request"]
    best16 = max((b for b in seed if b.batch == 16), key=lambda b: b.requests_per_s)
    best1 = min((b for b in seed if b.batch == 1), key=lambda b: b.p50_ms)
    at = {level.concurrency: level for level in levels}
    return {
        "ceiling ratio": round(at[16].requests_per_s / best16.requests_per_s, 3),
        "p95@16 / p50@1": round(at[16].p95_ms / at[1].p50_ms, 2),
        "p50@1 - bare batch-1 p50 (ms)": round(at[1].p50_ms - best1.p50_ms, 2),
        **({"same, paired rounds, median (ms)": round(statistics.median(paired), 2)} if paired else {}),
        "non-2xx at c50": at[50].non_2xx,
    }


def run(settings: Settings, *, seconds: float = 20.0, c50_seconds: float = 60.0, workers: tuple[int, ...] = (1, 2),
        log: Callable[[str], None] = print) -> dict:
    """The whole benchmark; returns (and logs) every measurement and the ratios per worker count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = tuple(sorted({1, cores}))
    log(f"bare model (VQAModel.answer in this process, PyTorch threads {', '.join(map(str, threads))}):")
    bare = bare_model(settings, threads=threads)
    for b in bare:
        log(f"  {b.inputs:<12} {b.threads} thread(s) batch {b.batch:<3} {b.requests_per_s:7.1f} req/s  "
            f"p50 {b.p50_ms:7.2f} ms/call  p95 {b.p95_ms:7.2f} ms/call")
    result: dict = {"bare": [asdict(b) for b in bare], "service": {}, "paired_c1_ms": {}, "paired_c1_in_worker_ms": {},
                    "ratios": {}}
    paired = bare_b1_p50(settings, settings.torch_threads or 1)
    for count in workers:
        # The machine's other load drifts: measure the bare model again right before each service run,
        # and compare with the best of all bare runs.
        again = bare_model(settings, threads=(settings.torch_threads or 1,), n=128, test_split=False)
        for b in again:
            log(f"  bare again: {b.threads} thread(s) batch {b.batch:<3} {b.requests_per_s:7.1f} req/s  "
                f"p50 {b.p50_ms:7.2f} ms/call")
        bare += again
        result["bare"] += [asdict(b) for b in again]
        log(f"service, {count} worker(s) ({settings.torch_threads or 1} PyTorch thread each), hey on {SEED_REQUEST}:")
        levels, diffs, inside = load_levels(settings, count, [(1, seconds), (16, seconds), (50, c50_seconds)],
                                            paired=paired, log=log)
        result["service"][count] = [asdict(level) for level in levels]
        result["paired_c1_ms"][count] = diffs
        result["paired_c1_in_worker_ms"][count] = inside
        result["ratios"][count] = ratios(bare, levels, diffs)
        for name, value in result["ratios"][count].items():
            log(f"  {name}: {value}")
    return result

"""The load benchmark's arithmetic (hey's summary, the ratios, the paired rounds) and its reference servers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest
import requests

from app.serving import loadbench
from app.serving.loadbench import (
    Bare,
    Level,
    Paired,
    cpu_seconds,
    event_latency_p50,
    paired_rounds,
    parse_hey,
    parse_service_totals,
    parse_worker_requests,
    pss_mib,
    ratios,
    reference_servers,
    spread,
)

HEY_SUMMARY = """
Summary:
  Total:	20.0105 secs
  Requests/sec:	312.4517

Latency distribution:
  10% in 0.0312 secs
  25% in 0.0398 secs
  50% in 0.0471 secs
  75% in 0.0553 secs
  90% in 0.0640 secs
  95% in 0.0702 secs
  99% in 0.0911 secs

Status code distribution:
  [200]	6240 responses
  [503]	12 responses

Error distribution:
  [3]	Post "http://127.0.0.1:5000/predict": context deadline exceeded (Client.Timeout exceeded)
"""


def test_hey_summary_gives_throughput_percentiles_and_every_failure():
    """req/s, p50 and p95 in ms, and non-2xx = other statuses plus requests that got no answer."""
    level = parse_hey(HEY_SUMMARY, workers=2, concurrency=16, seconds=20)
    assert (level.requests_per_s, level.p50_ms, level.p95_ms) == (312.5, 47.1, 70.2)
    assert level.non_2xx == 12 + 3


def test_ratios_compare_with_the_best_bare_model_run():
    """The ceiling uses the fastest batch-16 run and the c1 overhead the fastest batch-1 run, on the seed request."""
    bare = [Bare("seed request", 1, 1, 50.0, 20.0, 25.0), Bare("seed request", 2, 1, 40.0, 18.0, 30.0),
            Bare("seed request", 1, 16, 300.0, 53.0, 60.0), Bare("seed request", 2, 16, 200.0, 80.0, 90.0),
            Bare("test split", 1, 16, 999.0, 1.0, 1.0)]
    levels = [Level(1, 1, 20, 50.0, 19.0, 22.0, 0), Level(1, 16, 20, 240.0, 60.0, 85.5, 0),
              Level(1, 50, 60, 250.0, 190.0, 230.0, 0)]
    assert ratios(bare, levels) == {"ceiling ratio": 0.8, "p95@16 / p50@1": 4.5,
                                    "p50@1 - bare batch-1 p50 (ms)": pytest.approx(1.0), "non-2xx at c50": 0}


def test_paired_rounds_add_the_median_of_each_ratio():
    """With paired rounds, each ratio is followed by the median of its per-round values."""
    bare = [Bare("seed request", 1, 1, 50.0, 20.0, 25.0), Bare("seed request", 1, 16, 300.0, 53.0, 60.0)]
    levels = [Level(1, 1, 20, 50.0, 21.0, 22.0, 0), Level(1, 16, 20, 150.0, 60.0, 84.0, 0),
              Level(1, 50, 60, 250.0, 190.0, 230.0, 3)]
    paired = Paired(c1_ms=[1.0, 9.0, 2.0], c1_in_worker_ms=[0.5, 8.0, 1.0], ceiling=[0.4, 0.6, 0.55],
                    p95_16_over_p50_1=[4.0, 6.0, 4.5])
    assert ratios(bare, levels, paired) == {
        "ceiling ratio": 0.5, "ceiling ratio, paired rounds, median": 0.55,
        "p95@16 / p50@1": 4.0, "p95@16 / p50@1, paired rounds, median": 4.5,
        "p50@1 - bare batch-1 p50 (ms)": pytest.approx(1.0),
        "p50@1 - bare batch-1 p50, paired rounds, median (ms)": 2.0, "non-2xx at c50": 3}


def test_each_reference_splits_the_c1_overhead_in_the_ratios():
    """Per reference server: its c1 over the bare model, and the service's over its, each a median of rounds."""
    bare = [Bare("seed request", 1, 1, 50.0, 20.0, 25.0), Bare("seed request", 1, 16, 300.0, 53.0, 60.0)]
    levels = [Level(1, 1, 20, 50.0, 21.0, 22.0, 0), Level(1, 16, 20, 150.0, 60.0, 84.0, 0),
              Level(1, 50, 60, 250.0, 190.0, 230.0, 0)]
    paired = Paired(c1_ms=[3.0, 4.0, 2.0],
                    c1_references_ms={"flask floor": [1.5, 2.5, 1.0], "stdlib floor": [0.5, 3.0, 0.0]})
    out = ratios(bare, levels, paired)
    assert out["flask floor p50@1 - bare batch-1 p50, paired rounds, median (ms)"] == 1.5
    assert out["p50@1 - flask floor p50@1, paired rounds, median (ms)"] == 1.5  # of 1.5, 1.5, 1.0
    assert out["stdlib floor p50@1 - bare batch-1 p50, paired rounds, median (ms)"] == 0.5
    assert out["p50@1 - stdlib floor p50@1, paired rounds, median (ms)"] == 2.0  # of 2.5, 1.0, 2.0
    assert not any("floor" in key for key in ratios(bare, levels, Paired()))


def test_paired_rounds_rotate_the_service_and_the_references(monkeypatch, tmp_path):
    """Round by round the c1 order rotates, so no server always runs right after the bare model."""
    calls = []
    p50s = {"service": 14.5, "flask": 13.0, "stdlib": 12.5}

    def fake_hey(url, body, concurrency, seconds, *, workers=1):
        calls.append((url, concurrency))
        return Level(workers, concurrency, seconds, 100.0, p50s[url] if concurrency == 1 else 40.0, 60.0, 0)

    monkeypatch.setattr(loadbench, "hey", fake_hey)
    probe = type("Probe", (), {"b1_p50": lambda self, s: 12.0, "b16_throughput": lambda self, s: 400.0})()
    log = tmp_path / "gunicorn.log"
    log.write_text("")
    out = paired_rounds(probe, "service", log, 2, 3, references={"flask": "flask", "stdlib": "stdlib"})
    assert [url for url, c in calls if c == 1] == ["service", "flask", "stdlib", "flask", "stdlib", "service",
                                                   "stdlib", "service", "flask"]
    assert out.c1_ms == [2.5] * 3 and out.c1_references_ms == {"flask": [1.0] * 3, "stdlib": [0.5] * 3}
    assert out.ceiling == [0.25] * 3 and out.p95_16_over_p50_1 == [round(60 / 14.5, 2)] * 3


def test_the_reference_servers_answer_as_the_model_does(settings):
    """Both floor servers, started as the bench starts them, answer the benchmark's request as the model does."""
    from app.model.vqa import VQAModel
    from app.serving.images import load_image_file

    vqa = VQAModel.load(settings.model_dir, max_answer_tokens=settings.max_answer_tokens)
    image = load_image_file(settings.images_root, loadbench.SEED_REQUEST["image_path"])
    expected = vqa.answer([image], [loadbench.SEED_REQUEST["question"]])[0]
    with reference_servers(settings) as references, requests.Session() as http:
        assert sorted(references) == ["flask floor", "service, lingering off", "stdlib floor"]
        for url in references.values():
            for _ in range(2):  # the second request reuses the kept-alive connection
                got = http.post(url, json=loadbench.SEED_REQUEST, timeout=30)
                assert got.status_code == 200, url
                assert got.json()["answer"] == expected.answer
                assert got.json()["quality_score"] == pytest.approx(expected.quality_score, abs=1e-4)


def test_in_worker_latency_reads_only_the_inference_events_written_after_the_offset(tmp_path):
    """The paired rounds split c1's overhead: this is the part inside the worker, from the events' latency_seconds."""
    log = tmp_path / "gunicorn.log"
    before = 'LOG_EVENT {"event":"inference","latency_seconds":0.9,"status":200}\n'
    log.write_text(before)
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("[INFO] Booting worker\n")
        for seconds in (0.011, 0.013, 0.012):
            f.write(f'LOG_EVENT {{"answer":"red","event":"inference","latency_seconds":{seconds},"status":200}}\n')
        f.write('LOG_EVENT {"error":"x","event":"error","latency_seconds":5.0,"status":503}\n')
    assert event_latency_p50(log, offset) == 12.0
    assert math.isnan(event_latency_p50(log, log.stat().st_size))  # no events after the end


def test_service_totals_come_from_the_batch_histogram_and_the_rebalance_counter():
    """Mean batch = difference of the histogram's sum over that of its count; closes come from their counter."""
    text = ("# HELP vqa_batch_size Requests answered together per batched model call\n"
            "# TYPE vqa_batch_size histogram\n"
            'vqa_batch_size_bucket{le="1.0"} 12.0\n'
            'vqa_batch_size_bucket{le="+Inf"} 508.0\n'
            "vqa_batch_size_sum 2408.0\n"
            "vqa_batch_size_count 508.0\n"
            "# HELP vqa_queue_wait_seconds Time queued\n"
            "# TYPE vqa_queue_wait_seconds histogram\n"
            "vqa_queue_wait_seconds_sum 1.5\n"
            "vqa_queue_wait_seconds_count 9.0\n"
            "# HELP vqa_connections_rebalanced_total Keep-alive connections closed\n"
            "# TYPE vqa_connections_rebalanced_total counter\n"
            "vqa_connections_rebalanced_total 7.0\n")
    assert parse_service_totals(text) == {"answered": 2408.0, "calls": 508.0, "rebalanced": 7.0}
    assert parse_service_totals("vqa_requests_total 3.0\n") == {"answered": 0.0, "calls": 0.0, "rebalanced": 0.0}


def test_cpu_and_memory_of_a_process_family_are_read_from_proc():
    """The bench's CPU and PSS columns add up gunicorn's master and workers: here, this process and a child."""
    alone_mib = pss_mib(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while pss_mib(os.getpid()) < alone_mib + 48 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pss_mib(os.getpid()) >= alone_mib + 48  # the child's 64 MiB buffer is counted
        assert cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()


def test_spread_is_each_workers_requests_between_two_scrapes():
    """Requests per worker come from the `vqa_worker_requests` gauge's per-pid samples, differenced and sorted."""
    def scrape(a: float, b: float) -> str:
        return ("# HELP vqa_worker_requests Requests this worker has taken\n"
                "# TYPE vqa_worker_requests gauge\n"
                f'vqa_worker_requests{{pid="812"}} {a}\n'
                f'vqa_worker_requests{{pid="813"}} {b}\n'
                "vqa_requests_total 3.0\n")

    before, after = parse_worker_requests(scrape(100.0, 40.0)), parse_worker_requests(scrape(1500.0, 40.0))
    assert before == {"812": 100.0, "813": 40.0}
    assert spread(before, after) == [0, 1400]
    assert spread({}, after) == [40, 1500]
    assert parse_worker_requests("vqa_requests_total 3.0\n") == {}

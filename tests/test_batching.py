"""Dynamic batching: batched answers equal one-by-one answers, and the batcher's queue, waits, failures and restarts."""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest

from app.model.vqa import Prediction, VQAModel
from app.serving.batching import Batcher, ModelFailed, QueueFull, WaitedTooLong
from app.serving.images import load_image_file

GUARD_S = 60  # generous bound on waits for another thread: a hang fails the test instead of blocking it


@pytest.fixture(scope="module")
def vqa(small_model_dir) -> VQAModel:
    return VQAModel.load(small_model_dir)


@pytest.fixture(scope="module")
def mixed_requests(dataset_dir, images_root) -> tuple[list, list[str]]:
    """24 test images with questions of many lengths (so a batch pads the shorter ones)."""
    rows = pd.read_csv(dataset_dir / "VQA_Dataset.csv")
    rows = rows[rows["split"] == "test"].sample(n=400, random_state=3)
    rows = rows.assign(words=rows["question"].str.split().str.len()).sort_values("words")
    picked = pd.concat([rows.head(8), rows.iloc[len(rows) // 2 - 4:len(rows) // 2 + 4], rows.tail(8)])
    images = [load_image_file(images_root, p) for p in picked["image_path"]]
    return images, picked["question"].tolist()


def test_a_padded_batch_gets_the_answers_and_scores_of_one_by_one(vqa, mixed_requests):
    """24 mixed requests answered in one batch match each answered alone: same answer, scores within 1e-4."""
    images, questions = mixed_requests
    padded = vqa.preprocess(images, questions)["attention_mask"]
    assert (padded == 0).any() and (padded.sum(dim=1) == padded.shape[1]).any()  # padding really happens
    together = vqa.answer(images, questions)
    alone = [vqa.answer([image], [question])[0] for image, question in zip(images, questions, strict=True)]
    assert [p.answer for p in together] == [p.answer for p in alone]
    for batched, single in zip(together, alone, strict=True):
        assert batched.quality_score == pytest.approx(single.quality_score, abs=1e-4)
        assert batched.drift_score == pytest.approx(single.drift_score, abs=1e-4)


def test_stock_blip_generate_would_attend_to_the_padding(vqa, mixed_requests):
    """Why VQAModel.forward masks the question itself: transformers' own BLIP generate answers differently in a batch.

    If this starts failing, transformers fixed its mask and VQAModel.forward can go back to `generate`.
    """
    import torch

    images, questions = mixed_requests
    batch = vqa.preprocess(images, questions)
    with torch.inference_mode():
        stock = vqa.blip.generate(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"], max_new_tokens=vqa.max_answer_tokens)
    decode = vqa.processor.tokenizer.batch_decode
    alone = [vqa.answer([image], [question])[0].answer for image, question in zip(images, questions, strict=True)]
    assert [a.strip() for a in decode(stock, skip_special_tokens=True)] != alone


# --- the batcher, with a stand-in model --------------------------------------------------------
class FakeModel:
    """Answers `<question>@<version>`; can be held (to let a queue fill) and made to fail on one question."""

    def __init__(self, version: str = "v1", fail_on: str | None = None):
        self.model_version, self.adapter_version = "fake", version
        self.fail_on = fail_on
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def answer(self, images, questions):
        self.calls.append(len(questions))
        self.entered.set()
        assert self.release.wait(GUARD_S)
        if self.fail_on in questions:
            raise RuntimeError(f"cannot answer {self.fail_on!r}")
        return [Prediction(f"{q}@{self.adapter_version}", 0.9, 0.8) for q in questions]


def make_batcher(model, **kw) -> Batcher:
    """A started batcher over `model`; every request goes through the model thread unless `inline_when_idle`."""
    options = {"max_batch": 8, "wait_ms": 0.0, "queue_size": 32, "timeout_s": GUARD_S, "inline_when_idle": False, **kw}
    holder = {"model": model}
    batcher = Batcher(lambda: holder["model"], **options)
    batcher.holder = holder  # type: ignore[attr-defined]
    batcher.start()
    return batcher


def answer_all(batcher: Batcher, questions: list[str]) -> list:
    """Queue every question first, then wait for each."""
    jobs = [batcher.submit(None, q) for q in questions]
    return [batcher.wait(job) for job in jobs]


def test_requests_queued_while_the_model_is_busy_are_answered_in_one_batch():
    """Eight requests that arrive during a model call run together next, each with its own answer."""
    model = FakeModel()
    model.release.clear()
    batcher = make_batcher(model)
    first = batcher.submit(None, "first")
    assert model.entered.wait(GUARD_S)
    queued = [batcher.submit(None, f"q{i}") for i in range(8)]
    model.release.set()
    done = [batcher.wait(job) for job in [first, *queued]]
    assert model.calls == [1, 8]
    assert [j.prediction.answer for j in done] == ["first@v1"] + [f"q{i}@v1" for i in range(8)]
    assert [j.batch_size for j in done] == [1] + [8] * 8
    batcher.stop()


def test_a_lone_request_on_an_idle_service_never_waits_for_company():
    """With a 10-minute batch wait, one request on an idle batcher is answered at once, alone."""
    model = FakeModel()
    batcher = make_batcher(model, wait_ms=600_000, timeout_s=GUARD_S)
    job = batcher.answer(None, "alone")
    assert job.prediction.answer == "alone@v1" and model.calls == [1]
    batcher.stop()


def test_a_lone_request_on_an_idle_service_is_answered_on_its_own_thread():
    """With nothing queued or running, the request thread answers itself; one arriving meanwhile is queued."""
    model = FakeModel()
    model.release.clear()
    seen: list[str] = []
    answer = model.answer

    def answer_and_note_the_thread(images, questions):
        seen.append(threading.current_thread().name)
        return answer(images, questions)

    model.answer = answer_and_note_the_thread
    batcher = make_batcher(model, inline_when_idle=True)
    alone = threading.Thread(target=lambda: batcher.answer(None, "alone"), name="request-1")
    alone.start()
    assert model.entered.wait(GUARD_S)
    queued = batcher.submit(None, "queued")  # the model is busy: this one goes to the model thread
    model.release.set()
    alone.join(GUARD_S)
    assert batcher.wait(queued).prediction.answer == "queued@v1"
    assert seen == ["request-1", "vqa-batcher"]
    batcher.stop()


def test_a_request_being_parsed_is_waited_for_and_joins_the_batch():
    """While a second request is inside `admission()`, the model thread waits for it (up to wait_ms)."""
    model = FakeModel()
    batcher = make_batcher(model, wait_ms=600_000)
    with batcher.admission() as submit_second:
        first = batcher.submit(None, "first")
        second = submit_second(None, "second")
    assert [batcher.wait(first).batch_size, batcher.wait(second).batch_size] == [2, 2]
    assert model.calls == [2]
    batcher.stop()


def test_a_full_queue_refuses_instead_of_growing():
    """With the model busy and the queue at its bound, the next request is refused with QueueFull (503)."""
    model = FakeModel()
    model.release.clear()
    batcher = make_batcher(model, queue_size=2)
    running = batcher.submit(None, "running")
    assert model.entered.wait(GUARD_S)
    waiting = [batcher.submit(None, "a"), batcher.submit(None, "b")]
    with pytest.raises(QueueFull) as refused:
        batcher.submit(None, "c")
    assert refused.value.status == 503 and refused.value.retry_after
    model.release.set()
    assert [batcher.wait(j).prediction.answer for j in [running, *waiting]] == ["running@v1", "a@v1", "b@v1"]
    batcher.stop()


def test_a_request_that_waits_past_the_timeout_gets_503_and_is_never_run():
    """A request still queued after VQA_REQUEST_TIMEOUT_S is answered WaitedTooLong, and the model skips it."""
    model = FakeModel()
    model.release.clear()
    batcher = make_batcher(model, timeout_s=0.3)
    running = batcher.submit(None, "running")
    assert model.entered.wait(GUARD_S)
    late = batcher.submit(None, "late")
    with pytest.raises(WaitedTooLong) as waited:
        batcher.wait(late)
    assert waited.value.status == 503
    model.release.set()
    assert running.done.wait(GUARD_S)
    batcher.timeout_s = GUARD_S
    assert batcher.answer(None, "next").prediction.answer == "next@v1"
    assert model.calls == [1, 1]  # "late" never reached the model
    batcher.stop()


def test_a_request_that_breaks_the_model_fails_alone():
    """When one request makes the batch fail, the others are answered one by one and only it gets a 500."""
    model = FakeModel(fail_on="poison")
    model.release.clear()
    batcher = make_batcher(model)
    first = batcher.submit(None, "first")
    assert model.entered.wait(GUARD_S)
    jobs = [batcher.submit(None, q) for q in ("a", "poison", "b")]
    model.release.set()
    batcher.wait(first)
    assert batcher.wait(jobs[0]).prediction.answer == "a@v1"
    with pytest.raises(ModelFailed) as failed:
        batcher.wait(jobs[1])
    assert failed.value.status == 500
    assert batcher.wait(jobs[2]).prediction.answer == "b@v1"
    batcher.stop()


def test_a_model_switch_between_batches_answers_each_batch_with_one_model():
    """Swapping the model reference mid-stream: every request is answered, each batch by exactly one model."""
    old, new = FakeModel("old"), FakeModel("new")
    batcher = make_batcher(old)
    before = answer_all(batcher, ["a", "b"])
    batcher.holder["model"] = new
    after = answer_all(batcher, ["c", "d"])
    assert [j.prediction.answer for j in before + after] == ["a@old", "b@old", "c@new", "d@new"]
    assert [j.model.adapter_version for j in before + after] == ["old", "old", "new", "new"]
    batcher.stop()


def test_a_crash_of_the_model_loop_is_logged_and_the_loop_restarted(caplog):
    """An exception in the loop itself is logged with its traceback, the loop restarts, health says so."""
    model = FakeModel()
    calls = []

    def on_batch(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("metrics backend exploded")

    batcher = make_batcher(model, on_batch=on_batch)
    with caplog.at_level(logging.ERROR, logger="app.threads"):
        assert batcher.answer(None, "one").prediction.answer == "one@v1"  # finished before the crash
        assert batcher.answer(None, "two").prediction.answer == "two@v1"  # served by the restarted loop
    crash = next(r for r in caplog.records if "crashed" in r.getMessage())
    assert crash.exc_info and "metrics backend exploded" in str(crash.exc_info[1])
    status, detail = batcher.health()
    assert status == "degraded" and "crashed 1 time" in detail and "metrics backend exploded" in detail
    batcher.stop()


def test_the_requests_of_a_batch_in_hand_when_the_loop_crashes_get_a_500_not_a_hang():
    """A crash between taking a batch and answering it fails that batch's requests; the next one is served."""
    model = FakeModel()
    broken = [True]

    def current():
        if broken[0]:
            broken[0] = False
            raise KeyError("model holder state")
        return model

    batcher = Batcher(current, max_batch=8, wait_ms=0.0, queue_size=8, timeout_s=GUARD_S, inline_when_idle=False)
    batcher.start()
    with pytest.raises(ModelFailed) as failed:
        batcher.answer(None, "in hand")
    assert failed.value.status == 500
    assert batcher.answer(None, "after").prediction.answer == "after@v1"
    batcher.stop()


def test_a_dead_model_thread_is_named_by_health_and_started_again(caplog):
    """If the thread dies outright, health() reports it failing by name and a new thread serves the next request."""
    model = FakeModel()
    kill = [True]

    def on_batch(jobs):
        if kill[0]:
            kill[0] = False
            raise SystemExit("thread killed")  # not an Exception: ends the thread itself

    batcher = make_batcher(model, on_batch=on_batch)
    batcher.answer(None, "one")
    batcher._thread.join(GUARD_S)
    assert not batcher.alive()
    status, detail = batcher.health()
    assert status == "failing" and "model thread is dead" in detail
    with caplog.at_level(logging.ERROR, logger="app.serving.batching"):
        assert batcher.answer(None, "two").prediction.answer == "two@v1"
    assert batcher.health()[0] == "ok"
    batcher.stop()


def test_stop_answers_what_is_queued_before_the_thread_ends():
    """Shutting a worker down answers the requests already queued instead of leaving them hanging."""
    model = FakeModel()
    model.release.clear()
    batcher = make_batcher(model)
    jobs = [batcher.submit(None, q) for q in ("a", "b", "c")]
    assert model.entered.wait(GUARD_S)
    stopper = threading.Thread(target=batcher.stop, args=(GUARD_S,))
    stopper.start()
    model.release.set()
    stopper.join(GUARD_S)
    assert [batcher.wait(j).prediction.answer for j in jobs] == ["a@v1", "b@v1", "c@v1"]
    assert not batcher.alive()

"""The harness end-to-end against an in-process fake OpenAI-compatible server."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from core.client import OpenAIClient
from core.manifest import read_manifest
from evaluation import build_messages, evaluate, load_benchmark, run_suite
from evaluation.fake_server import FakeOpenAIServer
from evaluation.judge import Judge, parse_verdict

# benchmark -> (overall right, total, closed right, closed total, open right, open total)
EXPECTED = {
    "vqa-rad": (2, 4, 1, 2, 1, 2),
    "slake": (3, 4, 3, 3, 0, 1),
    "pathvqa": (1, 2, 1, 1, 0, 1),
    "pmc-vqa": (2, 3, 2, 3, 0, 0),
    "omnimedvqa": (1, 2, 1, 2, 0, 0),
    "mmmu-med": (3, 5, 2, 4, 1, 1),
    "medxpertqa": (1, 2, 1, 2, 0, 0),
}


def _client(srv, **kw):
    kw.setdefault("backoff_base", 0.001)
    return OpenAIClient(srv.base_url, "k", **kw)


def test_every_benchmark_scores_exactly(data_dir, tmp_path, responder):
    with FakeOpenAIServer(responder) as srv:
        client = _client(srv, concurrency=4)
        results = run_suite(
            client,
            model="fake-model",
            benchmarks=list(EXPECTED),
            out_dir=tmp_path / "run",
            data_dir=data_dir,
            progress=False,
        )
    for name, (right, total, c_right, c_total, o_right, o_total) in EXPECTED.items():
        m = results[name].summary
        got = (
            m["overall"]["right"],
            m["overall"]["total"],
            m["closed"]["right"],
            m["closed"]["total"],
            m["open"]["right"],
            m["open"]["total"],
        )
        assert got == (right, total, c_right, c_total, o_right, o_total), name
    vqa = results["vqa-rad"].summary["open"]
    assert vqa["em"] == 0.5 and vqa["f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert vqa["recall"] == 1.0 and vqa["precision"] == 0.75 and vqa["bleu1"] == pytest.approx(0.75)
    assert vqa["rougel"] == pytest.approx((2 / 3 + 1) / 2)
    assert results["slake"].summary["open"]["f1"] == pytest.approx(1 / 3)
    assert results["pmc-vqa"].summary["refusals"] == 1
    assert set(results["slake"].summary["by_modality"]) == {"CT", "MRI"}
    # outputs
    run = tmp_path / "run"
    assert (run / "results.md").is_file() and (run / "chart.png").stat().st_size > 1000
    assert json.loads((run / "run.json").read_text())["benchmarks"]["vqa-rad"]["acc"] == 0.5
    preds = [json.loads(x) for x in (run / "vqa-rad" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {p["id"] for p in preds} == {f"vqa-rad-{i:05d}" for i in range(4)}
    assert all({"response", "correct", "extracted", "key"} <= set(p) for p in preds)
    metrics = json.loads((run / "mmmu-med" / "metrics.json").read_text())
    assert metrics["overall"]["acc"] == pytest.approx(0.6) and metrics["config"]["params"]["temperature"] == 0.0
    # requests: greedy, images first as PNG data URLs, then the MedEvalKit prompt
    body = next(b for b in srv.requests if "Is there a fracture?" in json.dumps(b))
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "Is there a fracture?\nPlease output 'yes' or 'no'(no extra output)."}
    assert body["temperature"] == 0.0 and body["max_tokens"] == 512


def test_resume_asks_only_missing_items(data_dir, tmp_path, responder):
    out = tmp_path / "run"
    with FakeOpenAIServer(responder) as srv:
        first = evaluate(_client(srv), model="m", benchmark="vqa-rad", out_dir=out, data_dir=data_dir, progress=False)
        assert len(srv.requests) == 4
        pred = out / "vqa-rad" / "predictions.jsonl"
        lines = pred.read_text().splitlines()
        pred.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10] + "\n")  # an interrupted run: one line cut
        second = evaluate(_client(srv), model="m", benchmark="vqa-rad", out_dir=out, data_dir=data_dir, progress=False)
        assert len(srv.requests) == 6  # only the two missing items were asked again
        third = evaluate(_client(srv), model="m", benchmark="vqa-rad", out_dir=out, data_dir=data_dir, progress=False)
        assert len(srv.requests) == 6
        evaluate(
            _client(srv),
            model="m",
            benchmark="vqa-rad",
            out_dir=out,
            data_dir=data_dir,
            progress=False,
            params={"max_tokens": 8},
        )  # other parameters: asked again
        assert len(srv.requests) == 10
    assert first.summary["overall"] == second.summary["overall"] == third.summary["overall"]


def test_failed_requests_count_wrong_and_are_retried_next_run(data_dir, tmp_path, responder):
    out = tmp_path / "run"
    with FakeOpenAIServer(responder, fail_first=[400]) as srv:
        m = evaluate(
            _client(srv, max_retries=0), model="m", benchmark="pathvqa", out_dir=out, data_dir=data_dir, progress=False
        )
        assert m.summary["errors"] == 1 and m.summary["overall"]["total"] == 2
        assert m.summary["overall"]["right"] <= 1
        again = evaluate(
            _client(srv, max_retries=0), model="m", benchmark="pathvqa", out_dir=out, data_dir=data_dir, progress=False
        )
    assert again.summary["errors"] == 0 and again.summary["overall"]["right"] == 1
    assert len(srv.requests) == 2  # the successful item was not asked twice


def test_limit_keeps_first_items(data_dir, tmp_path, responder):
    with FakeOpenAIServer(responder) as srv:
        m = evaluate(
            _client(srv), model="m", benchmark="vqa-rad", out_dir=tmp_path, data_dir=data_dir, limit=2, progress=False
        )
    assert m.n == 2 and m.summary["closed"]["total"] == 2 and len(srv.requests) == 2


def test_llm_judge_decides_open_answers_only(data_dir, tmp_path, responder):
    with FakeOpenAIServer(responder) as srv, FakeOpenAIServer(lambda b: "<think>same</think><judge>0</judge>") as jsrv:
        judge = Judge(_client(jsrv), "judge-model")
        m = evaluate(
            _client(srv),
            model="m",
            benchmark="vqa-rad",
            out_dir=tmp_path,
            data_dir=data_dir,
            judge=judge,
            progress=False,
        )
    assert len(jsrv.requests) == 2  # the two open questions, never the closed ones
    assert (
        "Reference answer: liver" in jsrv.requests[0]["messages"][0]["content"]
        or "Reference answer: liver" in jsrv.requests[1]["messages"][0]["content"]
    )
    s = m.summary
    assert s["open"]["right"] == 2 and s["open"]["em"] == 0.5 and s["open"]["judge_acc"] == 1.0
    assert s["closed"]["right"] == 1 and s["overall"]["right"] == 3 and s["overall"]["total"] == 4
    assert m.config["judge_model"] == "judge-model"


def test_parse_verdict():
    assert parse_verdict("<judge>0</judge>") is True
    assert parse_verdict("<judge> 1 </judge>") is False
    assert parse_verdict("correct") is None


def _seeing_responder(manifest_path):
    """A fake model that answers from the image it is shown: perfect when images match their questions."""
    truth = {}
    for s in read_manifest(manifest_path):
        data = (manifest_path.parent / s.images[0].path).read_bytes()
        truth[(hashlib.sha256(data).hexdigest(), s.meta.question_type)] = s.meta.answer
    questions = {"What modality": "modality", "Is there a nodule": "presence", "Which lung": "side"}

    def respond(body):
        parts = body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        digest = hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
        text = next(p["text"] for p in parts if p["type"] == "text")
        qt = next(v for k, v in questions.items() if text.startswith(k))
        return truth[(digest, qt)]

    return respond


def test_phantoms_per_question_type_and_shuffled_control(phantom_manifest, tmp_path):
    data_dir = phantom_manifest.parent.parent
    with FakeOpenAIServer(_seeing_responder(phantom_manifest)) as srv:
        client = _client(srv)
        seen = evaluate(
            client, model="m", benchmark="phantoms", out_dir=tmp_path / "run", data_dir=data_dir, progress=False
        )
        control = evaluate(
            client,
            model="m",
            benchmark="phantoms",
            out_dir=tmp_path / "run",
            data_dir=data_dir,
            shuffle_images_seed=0,
            progress=False,
        )
    assert seen.accuracy == 1.0 and seen.closed_accuracy == 1.0
    by_type = seen.summary["by_question_type"]
    assert set(by_type) == {"modality", "presence", "side"}
    assert by_type["presence"]["closed"]["chance"] == pytest.approx(4 / 6)
    assert by_type["side"]["closed"]["chance"] == pytest.approx(0.5)
    assert control.benchmark == "phantoms-shuffled" and control.accuracy < 1.0
    assert (tmp_path / "run" / "phantoms-shuffled" / "metrics.json").is_file()
    # the prompts are the manifest's own questions, no MedEvalKit instruction appended
    texts = [p["text"] for b in srv.requests for p in b["messages"][0]["content"] if p["type"] == "text"]
    assert "Is there a nodule?" in texts


def test_contamination_is_reported_with_the_scores(phantom_manifest, tmp_path, make_phantom_records, make_png):
    from core.manifest import write_manifest

    train_dir = tmp_path / "train"
    records = make_phantom_records(3, split="train")
    # Training image 0 is a re-encoded copy of test image 1; one training sample shares a test patient.
    src = phantom_manifest.parent / "images" / "ph-test-001.png"
    from PIL import Image

    (train_dir / "images").mkdir(parents=True)
    Image.open(src).convert("RGB").save(train_dir / "images" / "ph-train-000.png", format="JPEG", quality=80)
    for i in (1, 2):
        make_png(train_dir / "images" / f"ph-train-{i:03d}.png", 900 + i)
    records[3]["meta"]["patient_hash"] = "pt-test-4"
    write_manifest(train_dir / "manifest.jsonl", records)
    with FakeOpenAIServer(lambda b: "yes") as srv:
        m = evaluate(
            _client(srv),
            model="m",
            benchmark="phantoms",
            out_dir=tmp_path / "run",
            data_dir=phantom_manifest.parent.parent,
            train_manifest=train_dir / "manifest.jsonl",
            progress=False,
        )
    c = m.contamination
    assert c["image"] == 3 and c["patient"] == 3 and c["contaminated"] == 6
    assert c["question"] == 18  # templated questions: reported, not flagged alone
    assert all(i.startswith(("ph-test-001-", "ph-test-004-")) for i in c["ids"]["contaminated"])
    assert c["clean_summary"]["overall"]["total"] == 12
    preds = [json.loads(x) for x in (tmp_path / "run" / "phantoms" / "predictions.jsonl").read_text().splitlines()]
    assert sum(p["contaminated"] for p in preds) == 6


def test_dicom_images_travel_as_wire_parts(tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    from core.manifest import write_manifest

    path = pydicom_data.get_testdata_file("CT_small.dcm")
    write_manifest(
        tmp_path / "m.jsonl",
        [
            {
                "id": "ct-1",
                "task": "vqa",
                "images": [{"path": path, "kind": "dicom", "render": {"window": "lung"}}],
                "messages": [
                    {"role": "user", "content": "<image>\nIs there a nodule?"},
                    {"role": "assistant", "content": "no"},
                ],
                "meta": {"split": "test"},
            }
        ],
    )
    bench = load_benchmark(f"manifest:{tmp_path / 'm.jsonl'}", tmp_path)
    msgs = build_messages(bench.samples[0], bench.root, send_dicom=True)
    part = msgs[0]["content"][0]
    assert part["image_url"]["url"].startswith("data:application/dicom;base64,")
    assert part["image_url"]["dicom"] == {"window": "lung"}
    assert msgs[0]["content"][1] == {"type": "text", "text": "Is there a nodule?"}


@pytest.fixture(scope="module")
def generated_phantoms(tmp_path_factory):
    """A data folder whose phantoms were generated by the loader on first use (core.phantoms)."""
    pytest.importorskip("core.phantoms")
    data_dir = tmp_path_factory.mktemp("gen") / "data"
    bench = load_benchmark("phantoms", data_dir, phantoms_n=40, phantoms_seed=0)
    assert (data_dir / "phantoms" / "manifest.jsonl").is_file() and len(bench) > 0
    return data_dir


@pytest.mark.parametrize("send_dicom", [True, False])
def test_generated_phantoms_end_to_end(generated_phantoms, tmp_path, send_dicom):
    """Real phantoms, sent as DICOM parts (our gateway) or as PNG renders made here."""
    data_dir = generated_phantoms
    with FakeOpenAIServer(lambda b: "yes") as srv:
        m = evaluate(
            _client(srv),
            model="m",
            benchmark="phantoms",
            out_dir=tmp_path / "run",
            data_dir=data_dir,
            send_dicom=send_dicom,
            progress=False,
        )
    manifest = data_dir / "phantoms" / "manifest.jsonl"
    held_out = [s for s in read_manifest(manifest) if s.meta.split == "test" and s.task == "vqa"]
    assert m.n == len(held_out) > 0 and m.summary["errors"] == 0
    presence = [s for s in held_out if s.meta.question_type == "presence"]
    yes_share = sum(s.meta.answer == "yes" for s in presence) / len(presence)
    assert m.summary["by_question_type"]["presence"]["closed"]["acc"] == pytest.approx(yes_share)
    url = srv.requests[0]["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:application/dicom;base64," if send_dicom else "data:image/png;base64,")


def test_series_files_resolve_against_the_manifest(tmp_path):
    """A series' ``files`` are relative to the manifest (as ``path``); each becomes one DICOM part."""
    pydicom_data = pytest.importorskip("pydicom.data")
    import shutil

    from core.manifest import write_manifest

    (tmp_path / "s").mkdir()
    src = pydicom_data.get_testdata_file("CT_small.dcm")
    for k in range(3):
        shutil.copy(src, tmp_path / "s" / f"{k}.dcm")
    write_manifest(
        tmp_path / "m.jsonl",
        [
            {
                "id": "series-1",
                "task": "vqa",
                "images": [{"path": "s", "kind": "series", "files": ["s/0.dcm", "s/1.dcm", "s/2.dcm"]}],
                "messages": [{"role": "user", "content": "<image>\nAny nodule?"}],
                "meta": {"split": "test", "answer": "no"},
            }
        ],
    )
    bench = load_benchmark(f"manifest:{tmp_path / 'm.jsonl'}", tmp_path)
    parts = build_messages(bench.samples[0], bench.root, send_dicom=True)[0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 3 + ["text"]


def test_judge_failures_fall_back_to_exact_match(data_dir, tmp_path, responder):
    with FakeOpenAIServer(responder) as srv, FakeOpenAIServer(lambda b: "no verdict here") as jsrv:
        m = evaluate(
            _client(srv),
            model="m",
            benchmark="vqa-rad",
            out_dir=tmp_path,
            data_dir=data_dir,
            judge=Judge(_client(jsrv), "j"),
            progress=False,
        )
    assert len(jsrv.requests) == 2
    assert m.summary["open"]["right"] == 1 and "judge_acc" not in m.summary["open"]

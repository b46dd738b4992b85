"""The judge scorer against a local fake OpenAI-compatible server that answers garbage or valid JSON.

The live tiny-model server test (the lead's session fixture) is still to come; this one checks parsing,
invalid-answer recording and that a run with a bad judge completes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request  # module level: the route's annotations are resolved from here

from core.client import OpenAIClient
from curation import InputSpec, curate
from curation._io import read_jsonl
from curation.scorers.judge import parse_judge_answer

from .conftest import make_image, vqa, write_jsonl

DIMS = ["visual", "text", "consistency", "medical", "safety"]


@pytest.mark.parametrize(
    "answer,valid",
    [
        (json.dumps({d: {"score": 0.8, "rationale": "fine"} for d in DIMS}), True),
        ("Sure! ```json\n" + json.dumps({d: 0.5 for d in DIMS}) + "\n```", True),
        ("the image looks fine", False),
        (json.dumps({"visual": 0.5}), False),
        (json.dumps({d: 7 for d in DIMS}), False),
        (json.dumps({d: "high" for d in DIMS}), False),
        ("", False),
    ],
)
def test_parse_judge_answer(answer: str, valid: bool) -> None:
    r = parse_judge_answer(answer, DIMS)
    assert r.valid is valid
    assert (r.error is None) is valid
    if valid:
        assert set(r.scores) == set(DIMS) and all(0 <= v <= 1 for v in r.scores.values())


@pytest.fixture
def fake_server() -> Iterator[tuple[str, list[dict]]]:
    """A FastAPI app on an OS-assigned port: JSON scores when the prompt mentions 'nodule', garbage otherwise."""
    import uvicorn

    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        seen.append(body)
        prompt = json.dumps(body["messages"])
        text = (
            json.dumps({d: {"score": 0.9, "rationale": "ok"} for d in DIMS})
            if "nodule" in prompt
            else "¯\\_(ツ)_/¯ no idea"
        )
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            assert time.time() < deadline, "fake server did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_run_with_judge_records_invalid_answers(tmp_path: Path, fake_server, recipe_factory) -> None:
    base_url, seen = fake_server
    for i in range(3):
        make_image(tmp_path / f"{i}.png", seed=i)
    recs = [
        vqa("n0", "0.png", "Is there a nodule in the lung on this CT?", "Yes, in the left lung."),
        vqa("n1", "1.png", "Is the nodule in the right lung on this CT?", "No, in the left lung."),
        vqa("g", "2.png", "Is the heart enlarged on this chest X-ray?", "No, the heart size is normal."),
        vqa(
            "phi", "2.png", "Is the heart enlarged?", "No. Call Dr. Smith at 555-123-4567."
        ),  # dropped before the judge
    ]
    write_jsonl(tmp_path / "m.jsonl", recs)
    client = OpenAIClient(base_url, "k", concurrency=2, max_retries=0, cache_dir=tmp_path / "cache")
    out = tmp_path / "out"
    result = curate(
        recipe_factory(),
        [InputSpec(tmp_path / "m.jsonl")],
        out,
        judge_client=client,
        judge_model="fake-judge",
        progress=False,
    )
    scores = {r["id"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert result.judged == 3 and result.judge_invalid == 1
    assert scores["n0"]["judge"]["valid"] and scores["n0"]["judge"]["scores"]["visual"] == 0.9
    bad = scores["g"]["judge"]
    assert bad["valid"] is False and bad["error"] == "no JSON object in the answer"
    assert scores["g"]["dimensions"] == scores["g"]["deterministic_dimensions"]  # invalid: deterministic kept
    blended = scores["n0"]["dimensions"]["text"]
    assert blended == pytest.approx(0.5 * scores["n0"]["deterministic_dimensions"]["text"] + 0.5 * 0.9, abs=1e-3)
    assert scores["phi"]["judge"] is None and len(seen) == 3
    assert "555-123" not in json.dumps(seen) and all(m["model"] == "fake-judge" for m in seen)
    sent = seen[0]["messages"][0]["content"]
    assert sent[0]["type"] == "image_url" and sent[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "judge: 3 sample(s) rated, 1 answer(s) invalid" in (out / "report.html").read_text().replace(
        "Judge:", "judge:"
    )


def test_unreachable_judge_marks_invalid_and_run_completes(tmp_path: Path, recipe_factory) -> None:
    make_image(tmp_path / "0.png")
    write_jsonl(tmp_path / "m.jsonl", [vqa("a", "0.png", "Is there a nodule in the lung?", "Yes, one nodule.")])
    client = OpenAIClient("http://127.0.0.1:9/v1", "k", max_retries=0, timeout=2)
    result = curate(
        recipe_factory(),
        [InputSpec(tmp_path / "m.jsonl")],
        tmp_path / "out",
        judge_client=client,
        judge_model="m",
        progress=False,
    )
    r = read_jsonl(tmp_path / "out" / "scores.jsonl")[0]
    assert result.judge_invalid == 1 and r["judge"]["error"].startswith("request failed")
    assert result.kept == 1


@pytest.mark.engine
@pytest.mark.slow
def test_judge_against_the_live_tiny_model_server(tmp_path: Path, gateway, recipe_factory) -> None:
    """Through the product's own gateway: the tiny model's answers are noise, so the run must complete
    and every unparseable answer must be recorded as invalid (never crash, never count as a score)."""
    for i in range(3):
        make_image(tmp_path / f"{i}.png", seed=i)
    recs = [vqa(f"s{i}", f"{i}.png", "Is there a nodule in the lung on this CT?", "Yes, in the left lung.") for i in range(3)]
    write_jsonl(tmp_path / "m.jsonl", recs)
    client = OpenAIClient(gateway.base_url, gateway.api_key, concurrency=2, max_retries=0, cache_dir=tmp_path / "cache")
    out = tmp_path / "out"
    result = curate(recipe_factory(), [InputSpec(tmp_path / "m.jsonl")], out, judge_client=client, judge_model=gateway.model, progress=False)
    scores = {r["id"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert result.judged == 3
    judged = [scores[f"s{i}"]["judge"] for i in range(3)]
    assert all(j is not None for j in judged)
    invalid = [j for j in judged if not j["valid"]]
    assert result.judge_invalid == len(invalid)
    for i, j in enumerate(judged):
        if not j["valid"]:
            assert j["error"] and scores[f"s{i}"]["dimensions"] == scores[f"s{i}"]["deterministic_dimensions"]
    assert (out / "report.html").exists()

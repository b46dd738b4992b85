"""``infimed eval`` and ``infimed eval compare`` against the in-process fake server."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.manifest import write_manifest
from evaluation.fake_server import FakeOpenAIServer
from infimed.cli import main


def _manifest(tmp_path: Path) -> Path:
    from PIL import Image

    Image.new("L", (16, 16), 80).save(tmp_path / "a.png")
    records = [
        {
            "id": f"q{i}",
            "task": "vqa",
            "images": [{"path": "a.png"}],
            "messages": [{"role": "user", "content": f"<image>\nQuestion {i}?"}, {"role": "assistant", "content": ans}],
            "meta": {"split": "test", "question_type": "presence", "options": ["yes", "no"]},
        }
        for i, ans in enumerate(["yes", "yes", "no", "yes"])
    ]
    write_manifest(tmp_path / "m.jsonl", records)
    return tmp_path / "m.jsonl"


def test_eval_runs_and_prints_a_summary(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    with FakeOpenAIServer(lambda b: "yes", models=["tiny"], api_key="sk-test") as srv:
        rc = main(
            [
                "eval",
                "--base-url",
                srv.base_url,
                "--api-key",
                "sk-test",
                "--benchmarks",
                f"manifest:{manifest}",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "--label",
                "base",
            ]
        )
        assert srv.requests[0]["model"] == "tiny"  # the endpoint's first model by default
    out = capsys.readouterr().out
    assert rc == 0
    assert "manifest:m" in out and "acc=75.0%" in out and "chance 75.0%" in out
    assert (tmp_path / "run" / "results.md").read_text().count("| **base** (tiny) |") == 1
    assert "sk-test" not in (tmp_path / "run" / "run.json").read_text()


def test_eval_compare_writes_chart_and_table(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    with FakeOpenAIServer(lambda b: "no", models=["tiny"]) as srv:
        for label in ("a", "b"):
            assert (
                main(
                    [
                        "eval",
                        "--base-url",
                        srv.base_url,
                        "--benchmarks",
                        f"manifest:{manifest}",
                        "--model",
                        "tiny",
                        "--out",
                        str(tmp_path / label),
                        "--no-progress",
                    ]
                )
                == 0
            )
    capsys.readouterr()
    rc = main(
        [
            "eval",
            "compare",
            f"{tmp_path / 'a'}=base",
            f"{tmp_path / 'b'}=tuned",
            "--out",
            str(tmp_path / "cmp.png"),
            "--table",
            str(tmp_path / "cmp.md"),
        ]
    )
    assert rc == 0
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "cmp.md").read_text()
    assert "| **base** (tiny) | this run | 25.00 |" in table and "| **tuned** (tiny) |" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmarks", "slake"], "SLAKE/test.json"),
        (["--benchmarks", "manifest:/nope.jsonl"], "file not found"),
        ([], "--benchmarks is required"),
    ],
)
def test_eval_input_errors_exit_2_without_traceback(tmp_path, capsys, argv, message):
    with FakeOpenAIServer(lambda b: "yes") as srv:
        rc = main(
            [
                "eval",
                "--base-url",
                srv.base_url,
                "--model",
                "m",
                "--data-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                *argv,
            ]
        )
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_eval_unreachable_endpoint(tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--benchmarks",
            "phantoms",
            "--out",
            str(tmp_path),
            "--retries",
            "0",
            "--timeout",
            "2",
        ]
    )
    assert rc == 2 and "cannot list models" in capsys.readouterr().err


def test_eval_failed_requests_exit_1(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    with FakeOpenAIServer(lambda b: "yes", fail_first=[400]) as srv:
        rc = main(
            [
                "eval",
                "--base-url",
                srv.base_url,
                "--model",
                "m",
                "--benchmarks",
                f"manifest:{manifest}",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "--retries",
                "0",
                "--concurrency",
                "1",
            ]
        )
    assert rc == 1 and "rerun the same command" in capsys.readouterr().err


def test_compare_missing_run(tmp_path, capsys):
    assert main(["eval", "compare", str(tmp_path / "none"), "--out", str(tmp_path / "c.png")]) == 2
    assert "metrics.json" in capsys.readouterr().err


@pytest.mark.parametrize(("owned_by", "prefix"), [("infimed", "data:application/dicom;"), ("vllm", "data:image/png;")])
def test_send_dicom_auto_follows_the_endpoint(tmp_path, owned_by, prefix):
    pydicom_data = pytest.importorskip("pydicom.data")
    path = pydicom_data.get_testdata_file("CT_small.dcm")
    write_manifest(
        tmp_path / "m.jsonl",
        [
            {
                "id": "ct",
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
    with FakeOpenAIServer(lambda b: "no", models=["tiny"], owned_by=owned_by) as srv:
        rc = main(
            [
                "eval",
                "--base-url",
                srv.base_url,
                "--benchmarks",
                f"manifest:{tmp_path / 'm.jsonl'}",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
    assert rc == 0
    assert srv.requests[0]["messages"][0]["content"][0]["image_url"]["url"].startswith(prefix)

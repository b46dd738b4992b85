"""`infimed ui` refuses bad input with a message naming the problem (no traceback, non-zero exit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infimed.cli import main


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["ui"], {}, "--api-url is required"),
        (["ui", "--api-url", "http://127.0.0.1:8000/v1"], {}, "give --api-key-file or set INFIMED_UI_API_KEY"),
        (
            ["ui", "--api-url", "http://127.0.0.1:8000/v1", "--api-key-file", "{missing}"],
            {},
            "cannot read the API key file",
        ),
        (["ui", "--api-url", "http://127.0.0.1:8000/v1", "--api-key-file", "{empty}"], {}, "the API key file is empty"),
        (["ui", "--api-url", "127.0.0.1:8000/v1"], {"INFIMED_UI_API_KEY": "k"}, "must start with http:// or https://"),
        (
            ["ui", "--api-url", "https://g.example/v1", "--api-ca-file", "{missing}"],
            {"INFIMED_UI_API_KEY": "k"},
            "--api-ca-file",
        ),
        (
            ["ui", "--api-url", "http://127.0.0.1:8000/v1", "--host", "0.0.0.0"],
            {"INFIMED_UI_API_KEY": "k"},
            "refusing to serve plain HTTP",
        ),
    ],
)
def test_bad_input(argv, env, message, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("INFIMED_UI_API_KEY", raising=False)
    monkeypatch.delenv("INFIMED_ALLOW_INSECURE_PUBLIC", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "empty.key").write_text("\n")
    argv = [a.format(missing=tmp_path / "nope.key", empty=tmp_path / "empty.key") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _quiet_store(monkeypatch) -> None:
    # `main` sets up logging once per process, on the stderr of the test that ran it first; a later log
    # line would go to that closed capture stream.
    import logging

    monkeypatch.setattr(logging.getLogger("ui.feedback"), "disabled", True)


def test_feedback_export_writes_a_manifest_curation_reads(tmp_path, monkeypatch, capsys):
    """`infimed ui feedback export`: linked flags/downs become samples `infimed curate` reads, images included."""
    from tests.ui.test_feedback import TURN
    from ui.feedback import FeedbackStore

    monkeypatch.setenv("INFIMED_UI_DATA_DIR", str(tmp_path / "data"))
    _quiet_store(monkeypatch)
    store = FeedbackStore(tmp_path / "data" / "feedback")
    store.add(TURN, rating="up", comment="fine", link=True)
    store.add(TURN, rating="flag", comment="no link")
    store.add(TURN, rating="flag", comment="left/right swapped", link=True)
    store.add(TURN, rating="down", comment="too vague", link=True)
    out = tmp_path / "elsewhere" / "flagged.jsonl"
    assert main(["ui", "feedback", "export", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote 2 sample(s)" in said and "skipped 1 without the linked" in said and "1 with another rating" in said

    from curation.readers import ReaderIssue, read_input

    samples = list(read_input(out, "manifest", scratch=tmp_path / "scratch"))
    assert len(samples) == 2 and not [s for s in samples if isinstance(s, ReaderIssue)]
    assert [s.meta.model_extra["feedback"] for s in samples] == ["flag", "down"]
    for s in samples:
        assert Path(s.images[0].path).is_file()  # relative in the file, resolved against the manifest
    line = json.loads(out.read_text().splitlines()[0])
    assert not Path(line["images"][0]["path"]).is_absolute()
    assert "7654321" not in out.read_text()  # the question was scrubbed when the feedback was stored

    assert main(["ui", "feedback", "export", "--out", str(out), "--ratings", "up", "--feedback", str(store.path)]) == 0
    assert "wrote 1 sample(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--feedback", "{missing}"], "no feedback file"),
        (["--ratings", "flag,meh"], "unknown rating(s) meh"),
    ],
)
def test_feedback_export_bad_input(extra, message, tmp_path, monkeypatch, capsys):
    from tests.ui.test_feedback import TURN
    from ui.feedback import FeedbackStore

    monkeypatch.setenv("INFIMED_UI_DATA_DIR", str(tmp_path))
    _quiet_store(monkeypatch)
    FeedbackStore(tmp_path / "feedback").add(TURN, rating="flag", link=True)
    argv = [
        "ui",
        "feedback",
        "export",
        "--out",
        str(tmp_path / "o.jsonl"),
        *(a.format(missing=tmp_path / "x.jsonl") for a in extra),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

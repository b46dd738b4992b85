"""`infimed ui` refuses bad input with a message naming the problem (no traceback, non-zero exit)."""

from __future__ import annotations

import pytest

from infimed.cli import main


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["ui", "--api-url", "http://127.0.0.1:8000/v1"], {}, "give --api-key-file or set INFIMED_UI_API_KEY"),
        (
            ["ui", "--api-url", "http://127.0.0.1:8000/v1", "--api-key-file", "{missing}"],
            {},
            "cannot read the API key file",
        ),
        (["ui", "--api-url", "http://127.0.0.1:8000/v1", "--api-key-file", "{empty}"], {}, "the API key file is empty"),
        (["ui", "--api-url", "127.0.0.1:8000/v1"], {"INFIMED_UI_API_KEY": "k"}, "must start with http:// or https://"),
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

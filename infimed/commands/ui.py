"""``infimed ui`` — the clinician web app, run alone against a gateway.

    infimed ui --api-url http://127.0.0.1:8000/v1 --api-key-file key.txt --username alice --password '…'
    INFIMED_UI_API_KEY=… INFIMED_UI_PASSWORD=… infimed ui --api-url https://gateway.example/v1 --username alice

The API key is read from ``--api-key-file`` or ``INFIMED_UI_API_KEY`` and stays in this process. The
password comes from ``--password`` or ``INFIMED_UI_PASSWORD``; without one a random password is
generated and printed to the console (never to a log).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="run the clinician web app against a gateway", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--api-url", required=True, help="the gateway's API base URL, including /v1")
    p.add_argument("--api-key-file", type=Path, help="a file holding the API key (else INFIMED_UI_API_KEY)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--username", default="clinician")
    p.add_argument("--password", default=None, help="the login password (else INFIMED_UI_PASSWORD, else generated)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where feedback is kept (default: INFIMED_UI_DATA_DIR or ~/.local/share/infimed/ui)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.api_key_file is not None:
        try:
            key = args.api_key_file.read_text().strip()
        except OSError as e:
            print(f"infimed ui: {args.api_key_file}: cannot read the API key file ({e.strerror or e})", file=sys.stderr)
            return 2
        if not key:
            print(f"infimed ui: {args.api_key_file}: the API key file is empty", file=sys.stderr)
            return 2
    else:
        key = os.environ.get("INFIMED_UI_API_KEY", "")
        if not key:
            print("infimed ui: give --api-key-file or set INFIMED_UI_API_KEY", file=sys.stderr)
            return 2
    if not args.api_url.startswith(("http://", "https://")):
        print(f"infimed ui: --api-url {args.api_url!r} must start with http:// or https://", file=sys.stderr)
        return 2
    public = args.host not in ("127.0.0.1", "localhost", "::1")
    if public and not os.environ.get("INFIMED_ALLOW_INSECURE_PUBLIC"):
        print(f"infimed ui: refusing to serve plain HTTP on {args.host}: put it behind a TLS proxy and set "
              "INFIMED_ALLOW_INSECURE_PUBLIC=1, or bind 127.0.0.1", file=sys.stderr)  # fmt: skip
        return 2
    password = args.password or os.environ.get("INFIMED_UI_PASSWORD") or secrets.token_urlsafe(12)
    from ui.app import launch_ui

    print(
        f"clinician UI on http://{args.host}:{args.port}/ui/  (user {args.username!r}, password {password!r})",
        flush=True,
    )
    launch_ui(
        api_url=args.api_url,
        api_key=key,
        host=args.host,
        port=args.port,
        username=args.username,
        password=password,
        data_dir=args.data_dir,
    )
    return 0

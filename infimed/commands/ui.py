"""``infimed ui`` — the clinician web app, run alone against a gateway; and its feedback export.

    infimed ui --api-url http://127.0.0.1:8000/v1 --api-key-file key.txt --username alice --password '…'
    INFIMED_UI_API_KEY=… INFIMED_UI_PASSWORD=… infimed ui --api-url https://gateway.example/v1 --username alice
    infimed ui --api-url https://gateway.hospital.local/v1 --api-ca-file hospital-ca.pem …   # a private CA
    infimed ui feedback export --out flagged.jsonl [--data-dir DIR | --feedback FILE] [--ratings flag,down]

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
    p.add_argument("--api-url", help="the gateway's API base URL, including /v1 (required to run the app)")
    p.add_argument("--api-key-file", type=Path, help="a file holding the API key (else INFIMED_UI_API_KEY)")
    p.add_argument("--api-ca-file", type=Path, help="CA bundle for an HTTPS gateway with a private CA")
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
    sub_ui = p.add_subparsers(dest="ui_command", metavar="{feedback}")
    fb = sub_ui.add_parser("feedback", help="clinician feedback").add_subparsers(dest="feedback_command", required=True)
    ex = fb.add_parser(
        "export",
        help="flagged answers → a curation manifest",
        description="Write the feedback records that carry the de-identified question, answer and images (the "
        "clinician ticked 'also keep …') with one of --ratings as a manifest for `infimed curate`. Records "
        "without that opt-in hold no question or answer and are counted, not exported.",
    )
    ex.add_argument("--out", type=Path, required=True, help="the manifest to write (JSONL)")
    ex.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the UI's data folder (default: INFIMED_UI_DATA_DIR or ~/.local/share/infimed/ui)",
    )
    ex.add_argument("--feedback", type=Path, default=None, help="a feedback.jsonl (instead of --data-dir)")
    ex.add_argument("--ratings", default="flag,down", help="comma-separated: flag, down, up (default flag,down)")
    ex.set_defaults(func=run_feedback_export)


def run_feedback_export(args: argparse.Namespace) -> int:
    from ui.feedback import export_feedback

    if args.feedback is not None:
        path = args.feedback
    else:
        from ui.app import default_data_dir

        path = (args.data_dir or default_data_dir()) / "feedback" / "feedback.jsonl"
    if not path.is_file():
        print(f"infimed ui feedback export: {path}: no feedback file (nothing recorded yet, or another --data-dir)",
              file=sys.stderr)  # fmt: skip
        return 2
    ratings = tuple(r.strip() for r in args.ratings.split(",") if r.strip())
    try:
        counts = export_feedback(path, args.out, ratings=ratings)
    except ValueError as e:  # an unknown rating, or a corrupt line
        print(f"infimed ui feedback export: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"infimed ui feedback export: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"wrote {counts['written']} sample(s) to {args.out}; skipped {counts['not_linked']} without the linked "
          f"question and answer, {counts['other_rating']} with another rating, {counts['missing_images']} whose "
          "images are gone")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.api_url:
        print("infimed ui: --api-url is required (or use a subcommand: infimed ui feedback export …)", file=sys.stderr)
        return 2
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
    if args.api_ca_file is not None and not args.api_ca_file.is_file():
        print(f"infimed ui: --api-ca-file {args.api_ca_file}: no such file", file=sys.stderr)
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
        api_ca_file=args.api_ca_file,
    )
    return 0

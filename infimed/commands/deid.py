"""``infimed deid IN_DIR OUT_DIR --salt-file F [--reports CSV] [--map-file F] [--remove-dates]``.

De-identifies a folder of DICOM (PS3.15 Basic Profile, salted deterministic UIDs) and, with
``--reports``, the matching reports/QA CSV; the re-identification map is written outside OUT_DIR.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deid", help="de-identify a folder of DICOM (and its reports)")
    p.add_argument("in_dir", help="folder of DICOM files (searched recursively)")
    p.add_argument("out_dir", help="output folder (must not be inside IN_DIR)")
    p.add_argument(
        "--salt-file", required=True, help="secret salt (≥ 16 bytes); the same salt gives the same UIDs and pseudonyms"
    )
    p.add_argument("--reports", default=None, help="CSV of reports/QA keyed by UIDs or patient ids; text is scrubbed")
    p.add_argument(
        "--map-file",
        default=None,
        help="re-identification map (default: OUT_DIR.reidentification.jsonl beside OUT_DIR)",
    )
    p.add_argument("--remove-dates", action="store_true", help="remove dates instead of shifting them per patient")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.deid import DeidError, deidentify_folder, load_salt

    try:
        salt = load_salt(args.salt_file)
        summary = deidentify_folder(
            args.in_dir,
            args.out_dir,
            salt=salt,
            reports=args.reports,
            map_file=args.map_file,
            shift_dates=not args.remove_dates,
        )
    except DeidError as e:
        print(f"infimed deid: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.out_dir}: {summary.files_written} files de-identified ({summary.patients} patients, {summary.uids} UIDs), "
        f"{summary.skipped_not_dicom} non-DICOM skipped, {summary.report_rows} report rows; map: {summary.map_file}"
    )
    for err in summary.errors:
        print(f"  error: {err}", file=sys.stderr)
    return 1 if summary.errors else 0

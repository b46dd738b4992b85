"""``infimed phantoms OUT --n N --seed S [--size PX] [--modalities CT,CR,MR] [--lesion-radius MIN MAX] [--question-set closed] ...``.

Writes synthetic chest phantoms (DICOM), their ground truth (truth.jsonl) and VQA + caption samples
(manifest.jsonl); ``--series K`` also writes a K-slice CT series under OUT/series/; ``--reports-csv F``
also writes what a hospital exports next to its DICOM folder: one CSV row per question-answer pair or
report, keyed by the image's SOPInstanceUID (the input of ``infimed deid --reports`` and
``infimed curate --reports``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantoms", help="write synthetic CT / X-ray / MR phantoms with question-answer pairs")
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, required=True, help="number of phantoms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (32..2048)")
    p.add_argument("--modalities", default="CT,CR,MR", help="comma-separated subset of CT,CR,MR")
    p.add_argument(
        "--lesion-radius",
        type=float,
        nargs=2,
        default=(3.0, 7.0),
        metavar=("MIN", "MAX"),
        help="nodule radius range in pixels",
    )
    p.add_argument("--lesion-contrast", type=float, default=1.0, help="0 = invisible … 1 = solid nodule")
    p.add_argument("--noise", type=float, default=0.03, help="noise sd relative to the tissue/lung difference")
    p.add_argument("--max-nodules", type=int, default=3)
    p.add_argument(
        "--grid-align",
        choices=("random", "center", "edge"),
        default="random",
        help="nodule centres vs the model's patch grid",
    )
    p.add_argument("--patch", type=int, default=28, help="merged patch size in pixels (patch_size x merge_size)")
    p.add_argument(
        "--question-set",
        choices=("standard", "closed"),
        default="standard",
        help="standard: closed + open questions; closed: every question closed, count with options, "
        "one chat per image and compact captions (the end-to-end learning proof)",
    )
    p.add_argument("--series", type=int, default=0, metavar="K", help="also write a K-slice CT series")
    p.add_argument(
        "--reports-csv",
        default=None,
        metavar="CSV",
        help="also write a reports / QA CSV keyed by SOPInstanceUID (a hospital export's companion file)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.phantoms import PhantomParams, generate_phantoms, generate_series

    try:
        params = PhantomParams(
            size=args.size,
            modalities=tuple(m.strip().upper() for m in args.modalities.split(",") if m.strip()),
            lesion_radius=tuple(args.lesion_radius),
            lesion_contrast=args.lesion_contrast,
            noise=args.noise,
            max_nodules=args.max_nodules,
            grid_align=args.grid_align,
            patch=args.patch,
        )
        if args.n < 1:
            raise ValueError(f"--n must be ≥ 1, got {args.n}")
    except ValueError as e:
        print(f"infimed phantoms: {e}", file=sys.stderr)
        return 2
    manifest = generate_phantoms(args.out_dir, n=args.n, seed=args.seed, params=params, question_set=args.question_set)
    lines = sum(1 for _ in manifest.open(encoding="utf-8"))
    print(f"{manifest}: {args.n} phantoms, {lines} samples (seed {args.seed}, {args.size}px)")
    if args.series:
        paths = generate_series(f"{args.out_dir}/series", slices=args.series, seed=args.seed, size=args.size)
        print(f"{args.out_dir}/series: {len(paths)} CT slices")
    if args.reports_csv:
        rows = write_reports_csv(manifest, args.reports_csv)
        qa = sum(1 for r in rows if r["question"])
        print(f"{args.reports_csv}: {len(rows)} rows ({qa} QA, {len(rows) - qa} reports)")
    return 0


def write_reports_csv(manifest: Path, out_csv: str | Path) -> list[dict[str, str]]:
    """One row per question or caption of a phantoms manifest: SOPInstanceUID, question, answer, question_type, options
    (a JSON list, empty for open questions), report. Written atomically."""
    import csv
    import json
    import os

    import pydicom

    rows: list[dict[str, str]] = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        s = json.loads(line)
        if s["task"] not in ("vqa", "caption"):
            continue  # a chat repeats the image's single questions, which are rows already
        dcm = manifest.parent / s["images"][0]["path"]
        sop = str(pydicom.dcmread(dcm, stop_before_pixels=True).SOPInstanceUID)
        row = {"SOPInstanceUID": sop, "question": "", "answer": "", "question_type": "", "options": "", "report": ""}
        meta = s.get("meta") or {}
        if s["task"] == "vqa":
            options = s.get("options") or meta.get("options")
            row |= {"question": s["messages"][0]["content"].split("\n", 1)[-1], "answer": str(meta["answer"]),
                    "question_type": meta.get("question_type", ""), "options": json.dumps(options) if options else ""}  # fmt: skip
        else:
            row["report"] = s["text"].replace("<image>", "").strip()
        rows.append(row)
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    return rows

"""Write the kind of file a hospital exports next to its DICOM folder, for the phantoms: one CSV row per
question-answer pair or report, keyed by the image's SOPInstanceUID (the README's fine-tuning walk-through).

    python scripts/phantom_reports_csv.py runs/ward7/export runs/ward7/reports_qa.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pydicom


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phantoms_dir", type=Path, help="a folder written by `infimed phantoms`")
    p.add_argument("out_csv", type=Path)
    args = p.parse_args(argv)
    manifest = args.phantoms_dir / "manifest.jsonl"
    if not manifest.is_file():
        print(f"{manifest}: not found (run `infimed phantoms {args.phantoms_dir} --n N` first)", file=sys.stderr)
        return 2
    rows = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        s = json.loads(line)
        dcm = args.phantoms_dir / s["images"][0]["path"]
        sop = pydicom.dcmread(dcm, stop_before_pixels=True).SOPInstanceUID
        row = {"SOPInstanceUID": sop, "question": "", "answer": "", "question_type": "", "report": ""}
        if s["task"] == "vqa":
            row |= {"question": s["messages"][0]["content"].split("\n", 1)[-1], "answer": s["meta"]["answer"],
                    "question_type": s["meta"]["question_type"]}  # fmt: skip
        else:
            row["report"] = s["text"].replace("<image>", "").strip()
        rows.append(row)
    args.out_csv.parent.mkdir(parents=True, exist_ok=True)
    with args.out_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{args.out_csv}: {len(rows)} rows ({sum(1 for r in rows if r['question'])} QA, "
          f"{sum(1 for r in rows if r['report'])} reports)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

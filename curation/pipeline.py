"""The curation run: read → score in shards (parallel, resumable) → judge → gates → dedup → keep → write.

Layout of the output folder::

    DIR/kept.jsonl          the curated manifest (image paths relative to DIR; sources never modified)
    DIR/rejected.jsonl      every dropped sample, ``meta.curation_reasons`` saying why
    DIR/scores.jsonl        all scores, per scorer and per dimension, decisions and reasons
    DIR/issues.jsonl        input records that could not be read (where and why)
    DIR/summary.json        counts per rule
    DIR/report.html         the report (+ DIR/report_files/*.png)
    DIR/images/             only images that were embedded in the input (data URLs, HF bytes)
    DIR/.state/             run fingerprint, salt (when generated), one finished file per shard

A killed run started again with the same recipe and inputs skips the shards already in ``.state``; every
file is written atomically, so none is ever half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import Sample
from curation._io import atomic_write_jsonl, atomic_write_text, read_jsonl
from curation.analyse import analyse_sample
from curation.dedup import find_duplicates
from curation.readers import ReaderIssue, read_input
from curation.recipe import DIMENSIONS, Recipe

log = logging.getLogger(__name__)

# gate name → recipe attribute holding its action ("drop" drops; anything else repairs or only records)
GATE_ACTIONS = {
    "undecodable_image": "undecodable_image",
    "empty_text": "empty_text",
    "missing_answer": "missing_answer",
    "direct_identifiers": "direct_identifiers",
    "dates": "dates",
    "header_phi": "header_phi",
    "burned_in_annotation": "burned_in_annotation",
    "burned_in_risk": "burned_in_risk",
    "licence": "licence",
}


class CurationError(ValueError):
    """The run cannot start or continue (bad inputs, an output folder of another run); says what to do."""


@dataclass(frozen=True)
class InputSpec:
    path: Path
    fmt: str = "auto"
    reports: Path | None = None
    image_root: Path | None = None


@dataclass
class CurationResult:
    output: Path
    total: int = 0
    kept: int = 0
    rejected: int = 0
    issues: int = 0
    shards_run: int = 0
    shards_skipped: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    judge_invalid: int = 0
    judged: int = 0


# --------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(recipe_json: str, salt: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["recipe"] = Recipe.model_validate_json(recipe_json)
    _WORKER["salt"] = salt


def score_shard(
    shard: int, start: int, samples: Sequence[dict[str, Any]], recipe: Recipe, salt: str
) -> list[dict[str, Any]]:
    """Analyse one shard's samples (positions ``start`` …) and return their records."""
    out = []
    for i, data in enumerate(samples):
        sample = Sample.model_validate(data)
        try:
            out.append(analyse_sample(sample, start + i, recipe, salt))
        except Exception as e:  # noqa: BLE001 - one broken sample must not end a long run; recorded below
            log.warning("shard %d: sample #%d failed in analysis: %s", shard, start + i, type(e).__name__)
            out.append(
                {
                    "index": start + i,
                    "id": sample.id,
                    "task": sample.task,
                    "scores": {},
                    "dimensions": {},
                    "flags": {"internal_error": f"analysis failed ({type(e).__name__})"},
                    "repaired": [],
                    "budget": {},
                    "images": [],
                    "text_sha": None,
                    "minhash": None,
                    "sample": sample.model_dump(mode="json", exclude_none=True),
                }
            )
    return out


def _worker_piece(task: tuple[int, int, int, list[dict[str, Any]]]) -> tuple[int, int, list[dict[str, Any]]]:
    shard, piece, start, samples = task
    return shard, piece, score_shard(shard, start, samples, _WORKER["recipe"], _WORKER["salt"])


def piece_size(n_samples: int, workers: int) -> int:
    """Samples per task handed to a worker: about 8 tasks per worker, 4…32 samples each.

    A shard (``run.shard_size``) is the unit of resume and stays independent of ``--workers``; the tasks
    are smaller, so a run of a few shards still uses every worker and no worker idles at the end while
    another finishes a whole shard (on a shared machine one worker is often slower).
    """
    return max(4, min(32, -(-n_samples // (8 * workers))))


def _mp_context() -> mp.context.BaseContext:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


# --------------------------------------------------------------------------- run set-up
def resolve_salt(recipe: Recipe, state: Path) -> str:
    """The split salt: recipe, else its environment variable, else ``.state/salt`` (created once)."""
    if recipe.splits.salt:
        return recipe.splits.salt
    if os.environ.get(recipe.splits.salt_env):
        return os.environ[recipe.splits.salt_env]
    f = state / "salt"
    if f.is_file():
        return f.read_text(encoding="utf-8").strip()
    salt = secrets.token_hex(16)
    atomic_write_text(f, salt + "\n")
    log.warning("no split salt configured: generated one in %s (keep it to reproduce these splits)", f)
    return salt


def read_all(inputs: Sequence[InputSpec], scratch: Path) -> tuple[list[dict[str, Any]], list[ReaderIssue]]:
    """Every input's samples (ids made unique) and reader issues."""
    samples: list[dict[str, Any]] = []
    issues: list[ReaderIssue] = []
    seen: Counter[str] = Counter()
    for spec in inputs:
        for item in read_input(spec.path, spec.fmt, reports=spec.reports, image_root=spec.image_root, scratch=scratch):
            if isinstance(item, ReaderIssue):
                issues.append(item)
                continue
            seen[item.id] += 1
            if seen[item.id] > 1:
                item.id = f"{item.id}~{seen[item.id]}"
            samples.append(item.model_dump(mode="json", exclude_none=True))
    return samples, issues


def _check_state(state: Path, fingerprint: dict[str, Any]) -> None:
    f = state / "run.json"
    if f.is_file():
        old = json.loads(f.read_text(encoding="utf-8"))
        if old != fingerprint:
            raise CurationError(
                f"{state.parent}: holds a run with another recipe, input or salt; "
                f"use a new output folder or delete {state} to start over"
            )
    else:
        atomic_write_text(f, json.dumps(fingerprint, indent=1, sort_keys=True))


def _shards(samples: list[dict[str, Any]], size: int) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
    for k, start in enumerate(range(0, len(samples), size)):
        yield k, start, samples[start : start + size]


def score_all(
    samples: list[dict[str, Any]], recipe: Recipe, salt: str, state: Path, *, workers: int, progress: bool = True
) -> tuple[int, int]:
    """Score every shard not yet in ``state/shards`` (in ``workers`` processes, or Ray). Returns (run, skipped)."""
    from tqdm.auto import tqdm

    shard_dir = state / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    todo = [
        (k, s, items)
        for k, s, items in _shards(samples, recipe.run.shard_size)
        if not (shard_dir / f"shard-{k:05d}.jsonl").is_file()
    ]
    n_shards = -(-len(samples) // recipe.run.shard_size) if samples else 0
    skipped = n_shards - len(todo)
    if skipped:
        log.info("resuming: %d of %d shard(s) already done", skipped, n_shards)
    if not todo:
        return 0, skipped
    bar = tqdm(
        total=sum(len(t[2]) for t in todo), desc="curate", unit="sample", disable=not progress, dynamic_ncols=True
    )
    try:
        if recipe.run.engine == "ray":
            from curation.ray_runner import score_shards_ray

            for k, records in score_shards_ray(todo, recipe, salt):
                atomic_write_jsonl(shard_dir / f"shard-{k:05d}.jsonl", records)
                bar.update(len(records))
        elif workers <= 1:
            for k, start, items in todo:
                records = score_shard(k, start, items, recipe, salt)
                atomic_write_jsonl(shard_dir / f"shard-{k:05d}.jsonl", records)
                bar.update(len(records))
        else:
            # Workers get small pieces of shards and send their records back; this process writes a
            # shard once all its pieces are in (pickling a record costs ~0.3 % of scoring it).
            size = piece_size(sum(len(t[2]) for t in todo), workers)
            tasks = [
                (k, j, s + o, items[o : o + size])
                for k, s, items in todo
                for j, o in enumerate(range(0, len(items), size))
            ]
            missing = Counter(k for k, *_ in tasks)
            parts: dict[int, dict[int, list[dict[str, Any]]]] = {}
            ctx = _mp_context()
            with ctx.Pool(workers, initializer=_init_worker, initargs=(recipe.model_dump_json(), salt)) as pool:
                for k, j, records in pool.imap_unordered(_worker_piece, tasks):
                    parts.setdefault(k, {})[j] = records
                    missing[k] -= 1
                    if not missing[k]:
                        done = [r for _, rs in sorted(parts.pop(k).items()) for r in rs]
                        atomic_write_jsonl(shard_dir / f"shard-{k:05d}.jsonl", done)
                    bar.update(len(records))
    finally:
        bar.close()
    return len(todo), skipped


# --------------------------------------------------------------------------- decisions
def _overall(dims: dict[str, float], recipe: Recipe) -> float:
    items = [(v, recipe.weights.get(d, 0.0)) for d, v in dims.items()]
    wsum = sum(w for _, w in items)
    return round(sum(v * w for v, w in items) / wsum, 4) if wsum else 0.0


def decide(records: list[dict[str, Any]], recipe: Recipe, judge: dict[int, Any] | None = None) -> None:
    """Fill each record's ``decision`` (kept | rejected), ``reasons`` (drops), ``notes``, ``overall``."""
    judge = judge or {}
    for r in records:
        reasons, notes = [], list(r.get("repaired") or [])
        for gate, why in r["flags"].items():
            action = getattr(recipe.gates, GATE_ACTIONS[gate]) if gate in GATE_ACTIONS else "drop"
            if action == "drop":
                reasons.append({"rule": f"gate:{gate}", "reason": why})
            elif action == "flag":
                notes.append(f"{gate}: {why}")
        dims = dict(r["dimensions"])
        j = judge.get(r["index"])
        if j is not None:
            r["judge"] = j.to_json()
            if j.valid:
                for d, s in j.scores.items():
                    dims[d] = (
                        round((1 - recipe.judge.weight) * dims[d] + recipe.judge.weight * s, 4) if d in dims else s
                    )
        r["dimensions_final"] = dims
        r["overall"] = _overall(dims, recipe)
        for d, minimum in recipe.gates.min_dimension_score.items():
            if d in dims and dims[d] < minimum:
                reasons.append({"rule": f"min_dimension:{d}", "reason": f"{d} score {dims[d]:.2f} < {minimum}"})
        r["reasons"], r["notes"] = reasons, notes

    alive = [r for r in records if not r["reasons"]]
    dups = find_duplicates(alive, [r["overall"] for r in alive], recipe.dedup)
    for pos, why in dups.items():
        rule = "dedup:exact" if why.startswith("exact") else "dedup:near"
        alive[pos]["reasons"].append({"rule": rule, "reason": why})
    alive = [r for r in alive if not r["reasons"]]
    if recipe.keep.threshold is not None:
        for r in alive:
            if r["overall"] < recipe.keep.threshold:
                r["reasons"].append(
                    {"rule": "threshold", "reason": f"overall {r['overall']:.2f} < {recipe.keep.threshold}"}
                )
        alive = [r for r in alive if not r["reasons"]]
    if recipe.keep.fraction is not None and alive:
        n_keep = max(1, round(len(alive) * recipe.keep.fraction))
        ranked = sorted(alive, key=lambda r: (-r["overall"], r["index"]))
        for r in ranked[n_keep:]:
            r["reasons"].append(
                {
                    "rule": "fraction",
                    "reason": f"not in the top {recipe.keep.fraction:.0%} (overall {r['overall']:.2f})",
                }
            )
    for r in records:
        r["decision"] = "rejected" if r["reasons"] else "kept"


def _output_sample(r: dict[str, Any], output: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(r["sample"]))
    for ref in data.get("images", []):
        ref["path"] = os.path.relpath(ref["path"], output)
        if ref.get("files"):
            ref["files"] = [os.path.relpath(f, output) for f in ref["files"]]
    meta = data.setdefault("meta", {})
    meta["curation_score"] = r.get("overall")
    if r["decision"] == "rejected":
        meta["curation_reasons"] = [x["reason"] for x in r["reasons"]]
    return data


def _score_line(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "decision": r["decision"],
        "overall": r["overall"],
        "dimensions": r.get("dimensions_final", r["dimensions"]),
        "deterministic_dimensions": r["dimensions"],
        "reasons": r["reasons"],
        "notes": r["notes"],
        "scorers": r["scores"],
        "judge": r.get("judge"),
        "budget": r["budget"],
        "split": r["sample"].get("meta", {}).get("split"),
        "patient_hash": r["sample"].get("meta", {}).get("patient_hash"),
    }


# --------------------------------------------------------------------------- entry point
def curate(
    recipe: Recipe,
    inputs: Sequence[InputSpec],
    output: str | Path,
    *,
    workers: int | None = None,
    judge_client: Any = None,
    judge_model: str | None = None,
    progress: bool = True,
) -> CurationResult:
    """Run a whole curation (see the module docstring for the outputs). Source data is never modified."""
    from curation.scorers import optional_problems

    problems = optional_problems(recipe.scorers)
    if problems:
        raise CurationError("the recipe asks for scorers this installation cannot run:\n  " + "\n  ".join(problems))
    output = Path(output).resolve()
    state = output / ".state"
    state.mkdir(parents=True, exist_ok=True)
    workers = workers or recipe.run.workers
    salt = resolve_salt(recipe, state)
    samples, issues = read_all(inputs, output / "images")
    if not samples:
        raise CurationError(
            "no usable samples in the input" + (f" ({len(issues)} unreadable record(s))" if issues else "")
        )
    fingerprint = {
        "recipe": recipe.fingerprint(),
        "salt": hashlib.sha256(salt.encode()).hexdigest()[:16],
        "inputs": [[str(Path(s.path).resolve()), s.fmt, str(s.reports) if s.reports else None] for s in inputs],
        "samples": len(samples),
        "ids": hashlib.sha256("\n".join(s["id"] for s in samples).encode()).hexdigest()[:16],
    }
    _check_state(state, fingerprint)
    ran, skipped = score_all(samples, recipe, salt, state, workers=workers, progress=progress)
    records: list[dict[str, Any]] = []
    for f in sorted((state / "shards").glob("shard-*.jsonl")):
        records.extend(read_jsonl(f))
    records.sort(key=lambda r: r["index"])

    judged: dict[int, Any] = {}
    if judge_client is not None and (judge_model or recipe.judge.model):
        from curation.scorers.judge import run_judge

        pre = Recipe.model_validate(recipe.model_dump())
        pre.keep.threshold, pre.keep.fraction, pre.dedup.enabled = None, None, False
        decide(records, pre)  # gates only: the judge sees gate survivors, never a sample with identifiers
        targets = {r["index"]: r["sample"] for r in records if r["decision"] == "kept"}
        judged = run_judge(targets, judge_client, recipe.judge, judge_model or recipe.judge.model or "")
    decide(records, recipe, judged)

    kept = [_output_sample(r, output) for r in records if r["decision"] == "kept"]
    rejected = [_output_sample(r, output) for r in records if r["decision"] == "rejected"]
    atomic_write_jsonl(output / "kept.jsonl", kept)
    atomic_write_jsonl(output / "rejected.jsonl", rejected)
    atomic_write_jsonl(output / "scores.jsonl", (_score_line(r) for r in records))
    atomic_write_jsonl(
        output / "issues.jsonl", ({"source": i.source, "where": i.where, "message": i.message} for i in issues)
    )

    result = CurationResult(
        output=output,
        total=len(records),
        kept=len(kept),
        rejected=len(rejected),
        issues=len(issues),
        shards_run=ran,
        shards_skipped=skipped,
    )
    for r in records:
        for x in r["reasons"]:
            result.rules[x["rule"]] += 1
    if issues:
        result.rules["reader:invalid"] = len(issues)
    result.judged = len(judged)
    result.judge_invalid = sum(1 for j in judged.values() if not j.valid)
    summary = {
        "recipe": recipe.name,
        "total": result.total,
        "kept": result.kept,
        "rejected": result.rejected,
        "unreadable_records": result.issues,
        "rules": dict(result.rules),
        "judged": result.judged,
        "judge_invalid": result.judge_invalid,
        "dimensions": list(DIMENSIONS),
    }
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
    from curation.report import write_report

    write_report(output, records, issues, summary, recipe)
    return result

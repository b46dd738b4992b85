"""Packing benchmark: packed vs padded batches, low vs high resolution, measured side by side in one run.

    python bench/packing.py                       # CPU: bench preset (20–50M) + tiny preset, ~3–5 min
    python bench/packing.py --device cuda --check # GPU: FlexAttention document mask (or flash-attn varlen), bf16
    python bench/packing.py --quick               # fewer steps (smoke)

The mixture (seeded, stated here so the numbers can be reproduced):

* images: 35 % CT-like 512×512; 25 % chest X-ray-like portrait, width U(1500, 2500), height = width × U(1.0, 1.25);
  25 % other photographs/pathology, width U(200, 1200), aspect U(0.5, 2.0) (sides rounded to 50 px);
  15 % text-only samples;
  5 % of the image samples carry a second image (same distribution);
* captions: word count log-normal (median 40 words, σ 0.7), clipped to [4, 300], drawn from a medical word list.

Figures, each for packed and padded (one sample per row, padded to the batch's longest sample, rounded
to a multiple of 8 — the usual HF collator):

1. packing efficiency = real tokens / tokens in the batch tensors, over a whole planned epoch;
2. training tokens/s (forward + backward + AdamW step, real tokens only) on the *same* samples; on the
   CPU packed rows are timed twice: SDPA with the block-diagonal mask (the default) and ``varlen_sdpa``
   (per-sample SDPA, no ``L²`` mask, ``training/attention.py``);
3. the low-resolution stage's visual tokens per image and tokens/s vs the high-resolution stage's.

Goals from the issue: packing efficiency ≥ 0.95 and packed throughput ≥ 1.8× padded on the 20–50M
model. The script prints the measured values and whether each goal is met; it never fails on a miss.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

WORDS = [
    "axial",
    "coronal",
    "ct",
    "mri",
    "chest",
    "lung",
    "nodule",
    "opacity",
    "effusion",
    "heart",
    "liver",
    "kidney",
    "lesion",
    "mass",
    "normal",
    "abnormal",
    "contrast",
    "enhanced",
    "density",
    "left",
    "right",
    "upper",
    "lower",
    "lobe",
    "small",
    "large",
    "round",
    "findings",
    "impression",
    "no",
    "evidence",
    "of",
    "the",
    "a",
    "with",
    "without",
    "is",
    "are",
    "there",
    "shows",
    "scan",
    "image",
    "consolidation",
    "fracture",
    "edema",
]


BACKEND_LABEL = {
    "sdpa": "block-diagonal mask, SDPA",
    "flex_attention": "FlexAttention document mask, compiled, rows padded to max_length",
    "flash_attention_2": "flash-attn varlen",
    "varlen_sdpa": "per-sample SDPA",
}

# --------------------------------------------------------------------------- the mixture


def image_size(rng: random.Random) -> tuple[int, int]:
    u = rng.random()
    # Sides are rounded to 50 px so that a few dozen distinct files cover the mixture.
    if u < 0.35 / 0.85:
        return 512, 512
    if u < 0.60 / 0.85:
        w = round(rng.randint(1500, 2500) / 50) * 50
        return w, round(w * rng.uniform(1.0, 1.25) / 50) * 50
    w = round(rng.randint(200, 1200) / 50) * 50
    return w, max(50, round(w * rng.uniform(0.5, 2.0) / 50) * 50)


def write_mixture(folder: Path, n: int, seed: int) -> Path:
    """Write ``n`` samples (manifest + small PNG placeholders carrying the stated sizes)."""
    from PIL import Image

    from core.manifest import write_manifest

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    cache: dict[tuple[int, int], str] = {}
    for i in range(n):
        words = int(min(300, max(4, rng.lognormvariate(np.log(40), 0.7))))
        text = " ".join(rng.choice(WORDS) for _ in range(words)) + "."
        if rng.random() < 0.15:
            samples.append({"id": f"s{i}", "task": "chat", "messages": [
                {"role": "user", "content": "Summarise the findings."}, {"role": "assistant", "content": text}]})  # fmt: skip
            continue
        k = 2 if rng.random() < 0.05 else 1
        images = []
        for _ in range(k):
            w, h = image_size(rng)
            if (w, h) not in cache:
                name = f"img-{w}x{h}.png"
                # Smooth content: the size is what matters here, and it keeps PNG writing/decoding fast.
                yy, xx = np.mgrid[0:h, 0:w]
                arr = ((xx * 255 // max(1, w - 1) + yy * 255 // max(1, h - 1)) // 2).astype(np.uint8)
                Image.fromarray(arr).convert("RGB").save(folder / name, compress_level=1)
                cache[(w, h)] = name
            images.append({"path": cache[(w, h)], "width": w, "height": h})
        samples.append({"id": f"s{i}", "task": "caption", "text": "<image>" * k + " " + text, "images": images})
    path = folder / "manifest.jsonl"
    write_manifest(path, samples)
    return path


# --------------------------------------------------------------------------- measurements


def padded_efficiency(lengths: list[int], batch: int, seed: int, multiple: int = 8) -> float:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    real = total = 0
    for b in range(0, len(order) - batch + 1, batch):
        rows = [lengths[i] for i in order[b : b + batch]]
        width = -(-max(rows) // multiple) * multiple
        real += sum(rows)
        total += width * batch
    return real / total


def interleaved_throughput(
    runs: dict[str, tuple], dataset, collators: dict, *, device: str, dtype: torch.dtype, warmup: int = 1
) -> dict[str, float]:
    """Real tokens/s of forward + backward + AdamW for several modes, timed step by step in turn.

    ``runs``: ``{mode: (model, backend, batches)}``; ``collators``: ``{mode: PackCollator}``. Steps
    alternate between the modes (packed step, padded step, …) so that load from other processes on a
    shared machine hits every mode alike. ``dtype`` bf16 runs the forward pass under autocast (fp32
    master weights, as the HF Trainer's ``bf16=True`` does).
    """
    from training.collator import real_tokens

    optims = {
        id(m): torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5) for m, _, _ in runs.values()
    }
    encoded = {k: [collators[k]([dataset[p] for p in b]) for b in batches] for k, (_, _, batches) in runs.items()}
    tokens = dict.fromkeys(runs, 0)
    elapsed = dict.fromkeys(runs, 0.0)
    autocast = torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32)
    for step in range(max(len(v) for v in encoded.values())):
        for mode, (model, backend, _) in runs.items():
            if step >= len(encoded[mode]):
                continue
            batch = encoded[mode][step]
            inputs = {key: (v.to(device) if torch.is_tensor(v) else v) for key, v in batch.items()}
            boundaries = inputs.pop("pack_boundaries")
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            # The mask is built inside the timed step: the training loop builds one per batch too.
            inputs.update(boundaries.attention_inputs(backend, dtype=torch.float32, device=device))
            with autocast:
                loss = model(**inputs, use_cache=False).loss
            loss.backward()
            optims[id(model)].step()
            optims[id(model)].zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                elapsed[mode] += time.perf_counter() - t0
                tokens[mode] += real_tokens(batch)
    return {k: tokens[k] / elapsed[k] for k in runs}


def load_model(path: Path, backend: str, device: str):
    from transformers import AutoModelForImageTextToText

    from training.attention import load_implementation

    torch.manual_seed(0)
    return (
        AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch.float32, attn_implementation=load_implementation(backend)
        )
        .to(device)
        .train()
    )


def check_equivalence(path: Path, dataset, collator, packs, backends: list[str], device: str) -> dict[str, dict]:
    """Packed vs unpacked on ``device`` in fp32 (TF32 off): loss relative difference and gradient cosine.

    The reference runs every sample of ``packs`` alone through the SDPA model with its own causal mask
    (token-weighted loss); each backend then runs the same samples packed. Reports the relative loss
    difference and the smallest cosine over all parameter tensors with a gradient.
    """
    from training.collator import PackCollator

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    samples = [s for p in packs for s in dataset[p]]  # dataset[pack] → that pack's encoded samples
    ref_model = load_model(path, "sdpa", device)
    counts = [sum(1 for x in s.labels[1:] if x != -100) for s in samples]
    total = sum(counts)
    ref_loss = 0.0
    single = PackCollator(
        pad_token_id=collator.pad_token_id, image_token_id=collator.image_token_id, pad_to_multiple_of=1
    )
    for s, n in zip(samples, counts, strict=True):
        b = single([[s]])
        b.pop("pack_boundaries")
        inputs = {k: v.to(device) for k, v in b.items()}
        # One sample alone: plain causal attention (no packing mask at all).
        loss = ref_model(**inputs, use_cache=False).loss * (n / total)
        loss.backward()
        ref_loss += loss.item()
    ref = {n: p.grad.detach().clone() for n, p in ref_model.named_parameters() if p.grad is not None}
    del ref_model
    out: dict[str, dict] = {}
    for backend in backends:
        try:
            model = load_model(path, backend, device)
            batch = collator([dataset[p] for p in packs])
            boundaries = batch.pop("pack_boundaries")
            inputs = {k: v.to(device) for k, v in batch.items()}
            inputs.update(boundaries.attention_inputs(backend, dtype=torch.float32, device=device))
            loss = model(**inputs, use_cache=False).loss
            loss.backward()
            cos = [
                torch.nn.functional.cosine_similarity(p.grad.flatten(), ref[n].flatten(), dim=0).item()
                for n, p in model.named_parameters()
                if n in ref and p.grad is not None and ref[n].norm() > 0
            ]
            out[backend] = {
                "rel_loss": abs(loss.item() - ref_loss) / ref_loss,
                "min_cos": min(cos),
                "tensors": len(cos),
            }
            del model
        except Exception as e:  # noqa: BLE001 — report every backend, whichever fails
            out[backend] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


def bench_model(preset: str, manifest: Path, args: argparse.Namespace) -> dict[str, float]:
    from transformers import AutoProcessor

    from core.tiny import ensure_tiny_model
    from training.attention import static_pad_length
    from training.collator import PackCollator
    from training.data import StageDataset, budget_from_processor
    from training.stage import DataSource, Stage
    from training.trainer import attention_backend

    path = ensure_tiny_model(args.cache, preset=preset)
    processor = AutoProcessor.from_pretrained(path)
    base = budget_from_processor(processor)
    # Packed rows: the engine's GPU backend (flash-attn varlen, else FlexAttention's document mask) or,
    # on the CPU, SDPA with the block-diagonal mask; plus varlen_sdpa (per-sample SDPA) everywhere.
    # Padded rows: SDPA with the usual padding (causal) mask — what a plain HF collator trains with.
    packed_backend = attention_backend("auto") if args.device == "cuda" else "sdpa"
    models = {b: load_model(path, b, args.device) for b in dict.fromkeys([packed_backend, "varlen_sdpa", "sdpa"])}
    n_params = sum(p.numel() for p in models["sdpa"].parameters())
    tok = processor.tokenizer

    def collator(multiple: int) -> PackCollator:
        return PackCollator(
            pad_token_id=tok.pad_token_id,
            image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
            pad_to_multiple_of=multiple,
        )

    out: dict[str, float] = {"params": n_params, "packed_backend": packed_backend}
    stages = {
        "low": Stage(
            name="low",
            data=[DataSource(manifest=str(manifest))],
            steps=1,
            max_pixels=base.max_pixels // 4,
            max_length=args.max_length // 2,
        ),
        "high": Stage(
            name="high",
            data=[DataSource(manifest=str(manifest))],
            steps=1,
            max_pixels=base.max_pixels,
            max_length=args.max_length,
        ),
    }
    for name, stage in stages.items():
        ds = StageDataset(stage, processor, base_budget=base, seed=0)
        lengths, _ = ds.lengths()
        plan = ds.plan(0)
        vis = [v for i in range(len(ds)) for v in ds.visual_tokens(i)]
        out[f"{name}_visual_per_image"] = sum(vis) / len(vis)
        out[f"{name}_eff_packed"] = plan.efficiency(8)
        out[f"{name}_eff_padded"] = padded_efficiency(
            [lengths[i] for i in range(len(ds)) if i not in plan.dropped], args.padded_batch, 0
        )
        out[f"{name}_dropped"] = len(plan.dropped)
        if args.check and name == "low":
            backends = [b for b in dict.fromkeys([packed_backend, "varlen_sdpa", "sdpa"])]
            out["check"] = check_equivalence(path, ds, collator(8), plan.packs[:2], backends, args.device)
            print(f"[{preset}] packed = unpacked: {out['check']}", flush=True)
        steps = args.steps + 1
        packs = plan.packs[:steps]
        pad = static_pad_length(packed_backend, stage.max_length, 8)
        runs = {"packed": (models[packed_backend], packed_backend, [[p] for p in packs])}
        collators = {"packed": collator(pad)}
        if packed_backend != "varlen_sdpa":
            runs["packed_varlen"] = (models["varlen_sdpa"], "varlen_sdpa", [[p] for p in packs])
            collators["packed_varlen"] = collator(8)
        if name == "high":
            # The same samples, padded: one sample per row, batches of `padded_batch`, shuffled.
            same = [i for p in packs[1:] for i in p]
            random.Random(1).shuffle(same)
            warm = [[(i,) for i in packs[0][: args.padded_batch]]]
            rows = [[(i,) for i in same[b : b + args.padded_batch]] for b in range(0, len(same), args.padded_batch)]
            runs["padded"] = (models["sdpa"], "sdpa", warm + rows)  # causal + padding mask
            collators["padded"] = collator(8)
        tps = interleaved_throughput(runs, ds, collators, device=args.device, dtype=args.torch_dtype)
        print(f"[{preset}] {name}-res tokens/s: " + ", ".join(f"{k} {v:.0f}" for k, v in tps.items()), flush=True)
        out[f"{name}_tps_packed"] = tps["packed"]
        if "packed_varlen" in tps:
            out[f"{name}_tps_packed_varlen"] = tps["packed_varlen"]
        if "padded" in tps:
            out["high_tps_padded"] = tps["padded"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--padded-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="timed packed steps per stage (after one warm-up)")
    ap.add_argument("--presets", default="bench,tiny")
    ap.add_argument("--cache", default=os.environ.get("INFIMED_TINY_CACHE", "/tmp/infimed-tiny-cache"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on a GPU")
    ap.add_argument("--check", action="store_true", help="also check packed = unpacked (loss, gradients) per backend")
    ap.add_argument("--json", type=Path, help="write the measured figures here")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.steps = 120, 1
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if args.device == "cuda" else "fp32")
    args.torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_mixture(Path(tmp), args.samples, seed=0)
        results = {p: bench_model(p, manifest, args) for p in args.presets.split(",")}
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(
        f"\npacking benchmark — {args.samples} samples, max_length {args.max_length}, padded batch {args.padded_batch}, "
        f"{device}, {dtype}"
    )
    if args.json:
        import json

        args.json.write_text(json.dumps({"device": device, "dtype": dtype, "results": results}, indent=2, default=str))
    for preset, r in results.items():
        print(f"\n[{preset} preset: {r['params'] / 1e6:.1f}M parameters]")
        print(f"{'':34}{'packed':>12}{'padded':>12}{'ratio':>9}")
        for stage in ("low", "high"):
            print(f"{stage + '-res packing efficiency':34}{r[stage + '_eff_packed']:>12.3f}{r[stage + '_eff_padded']:>12.3f}"
                  f"{r[stage + '_eff_packed'] / r[stage + '_eff_padded']:>8.2f}×")  # fmt: skip
        ratio = r["high_tps_packed"] / r["high_tps_padded"]
        print(f"{'high-res training tokens/s':34}{r['high_tps_packed']:>12.0f}{r['high_tps_padded']:>12.0f}{ratio:>8.2f}×"
              f"   (packed: {BACKEND_LABEL.get(r['packed_backend'], r['packed_backend'])})")  # fmt: skip
        if "high_tps_packed_varlen" in r:
            ratio_v = r["high_tps_packed_varlen"] / r["high_tps_padded"]
            ratio = max(ratio, ratio_v)
            print(f"{'high-res tokens/s, varlen_sdpa':34}{r['high_tps_packed_varlen']:>12.0f}{r['high_tps_padded']:>12.0f}{ratio_v:>8.2f}×"
                  "   (packed: per-sample SDPA, no L² mask)")  # fmt: skip
        print(f"{'':34}{'low-res':>12}{'high-res':>12}")
        print(f"{'visual tokens per image':34}{r['low_visual_per_image']:>12.1f}{r['high_visual_per_image']:>12.1f}")
        print(f"{'packed training tokens/s':34}{r['low_tps_packed']:>12.0f}{r['high_tps_packed']:>12.0f}")
        if "low_tps_packed_varlen" in r:
            print(
                f"{'packed tokens/s, varlen_sdpa':34}{r['low_tps_packed_varlen']:>12.0f}{r['high_tps_packed_varlen']:>12.0f}"
            )
        print(f"{'samples dropped (over-long)':34}{r['low_dropped']:>12.0f}{r['high_dropped']:>12.0f}")
        for backend, c in r.get("check", {}).items():
            verdict = (f"loss rel diff {c['rel_loss']:.1e}, min grad cosine {c['min_cos']:.6f} over {c['tensors']} tensors"
                       f" — {'OK' if c['rel_loss'] <= 1e-5 and c['min_cos'] >= 0.9999 else 'MISMATCH'}") if "error" not in c else c["error"]  # fmt: skip
            print(f"{'packed = unpacked, ' + backend:34}{verdict}")
        if preset == "bench":
            eff_ok = min(r["low_eff_packed"], r["high_eff_packed"]) >= 0.95
            print(f"goal packing efficiency ≥ 0.95: {'met' if eff_ok else 'NOT met'}; "
                  f"goal packed ≥ 1.8× padded tokens/s: {'met' if ratio >= 1.8 else 'NOT met'} ({ratio:.2f}×)")  # fmt: skip
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

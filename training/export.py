"""From a trained stage to something a server loads: merged weights, or one LoRA adapter over the base.

Three jobs, each checked on tensors rather than trusted from a config:

1. :func:`compare_to_base` — which weights of a trained model differ from its base, grouped by module
   (vision / projector / language), and whether the differences in the language model are exactly the
   merged LoRA deltas (``W_final == W_base + Σ_k s_k B_k A_k``). vLLM applies an adapter to the
   *original* base, so an adapter-only export is sound only when nothing else changed.
2. :func:`stack_adapters` — the LoRA adapters of chained stages (stage k trained on stage k−1's merged
   output) as one PEFT adapter over the base: the deltas add up, so concatenating the ranks is exact
   (``A = [A_1; A_2; …]``, ``B = [s_1 B_1, s_2 B_2, …]``, ``alpha = r``, hence scale 1). A single
   adapter is copied unchanged.
3. :func:`write_merged` — a model directory (weights, config, processor, tokenizer, chat template) that
   ``transformers`` and vLLM load, in the base model's dtype unless told otherwise.

Weight names are compared in one canonical form: transformers 5 keeps Qwen2.5-VL's language model under
``model.language_model.*`` and the vision tower under ``model.visual.*`` in memory, while its
``save_pretrained`` (like the hub checkpoints) writes the older ``model.*`` / ``visual.*`` names, and
PEFT adapters carry the in-memory names under ``base_model.model.``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.stage import MODULES, Module
from training.trainability import module_of

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# What a stage's final/ holds that a served model does not need.
_NOT_EXPORTED = {"adapter", "stage_done.json", "training_args.bin"}


class ExportError(ValueError):
    """An export cannot be written; the message names the folder and the problem."""


# --------------------------------------------------------------------------- names and files


def canonical_key(key: str) -> str:
    """One name per weight whichever layout wrote it (see the module docstring)."""
    key = key.removeprefix("base_model.model.")
    if key.startswith("model.language_model."):
        return "model." + key.removeprefix("model.language_model.")
    if key.startswith("model.visual."):
        return "visual." + key.removeprefix("model.visual.")
    return key


def resolve_model_dir(name_or_path: str) -> Path:
    """A local model folder, or a hub name already in the local Hugging Face cache (nothing downloads)."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as e:  # the hub raises several kinds for "not cached"
        raise ExportError(f"{name_or_path}: base model is neither a folder nor in the local Hugging Face cache") from e


def weight_files(model_dir: Path) -> dict[str, tuple[Path, str]]:
    """``{canonical key: (file, key in file)}`` over ``model.safetensors`` or a sharded index."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    elif (model_dir / "model.safetensors").is_file():
        files = [model_dir / "model.safetensors"]
    else:
        raise ExportError(f"{model_dir}: no model.safetensors (or index) found")
    out: dict[str, tuple[Path, str]] = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                out[canonical_key(k)] = (f, k)
    return out


def _read(entry: tuple[Path, str]) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(entry[0]), "pt") as fh:
        return fh.get_tensor(entry[1])


# --------------------------------------------------------------------------- LoRA adapters


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter: ``{target module path: (A, B)}`` and its scale ``alpha / r``."""

    path: Path
    rank: int
    alpha: float
    scale: float
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    config: dict[str, Any]

    def delta(self, module: str) -> torch.Tensor:
        a, b = self.modules[module]
        return self.scale * (b.double() @ a.double())


def read_adapter(path: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
        state = load_file(str(path / ADAPTER_WEIGHTS))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not a readable PEFT adapter ({e})") from e
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{path}: peft_type {config.get('peft_type')!r} is not LORA")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError(f"{path}: per-module ranks (rank_pattern/alpha_pattern) are not supported")
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = t
                break
        else:
            raise ExportError(f"{path}: unexpected tensor {key} (only lora_A / lora_B are supported)")
    modules = {m: (p["lora_A"], p["lora_B"]) for m, p in pairs.items() if {"lora_A", "lora_B"} <= p.keys()}
    if len(modules) != len(pairs):
        raise ExportError(f"{path}: some modules have lora_A without lora_B (or the reverse)")
    return LoraAdapter(path, r, alpha, scale, modules, config)


def stack_adapters(adapters: list[LoraAdapter], out_dir: str | Path, *, base_model: str) -> Path:
    """Write one PEFT adapter whose delta is the sum of ``adapters``' deltas (exact; see the docstring)."""
    from safetensors.torch import save_file

    if not adapters:
        raise ExportError("no LoRA adapter to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(adapters) == 1:
        a = adapters[0]
        shutil.copyfile(a.path / ADAPTER_WEIGHTS, out / ADAPTER_WEIGHTS)
        config = dict(a.config, base_model_name_or_path=base_model, inference_mode=True)
        (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return out

    rank = sum(a.rank for a in adapters)
    modules = sorted({m for a in adapters for m in a.modules})
    state: dict[str, torch.Tensor] = {}
    for m in modules:
        blocks_a, blocks_b = [], []
        ref_a, ref_b = next(a.modules[m] for a in adapters if m in a.modules)
        for a in adapters:
            if m in a.modules:
                la, lb = a.modules[m]
                blocks_a.append(la.float())
                blocks_b.append(lb.float() * a.scale)
            else:  # this stage did not adapt the module: a zero block keeps the ranks aligned
                blocks_a.append(torch.zeros(a.rank, ref_a.shape[1]))
                blocks_b.append(torch.zeros(ref_b.shape[0], a.rank))
        state[f"base_model.model.{m}.lora_A.weight"] = torch.cat(blocks_a, 0).to(ref_a.dtype).contiguous()
        state[f"base_model.model.{m}.lora_B.weight"] = torch.cat(blocks_b, 1).to(ref_b.dtype).contiguous()
    save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    targets = {json.dumps(a.config.get("target_modules"), sort_keys=True) for a in adapters}
    config = dict(
        adapters[-1].config,
        r=rank,
        lora_alpha=rank,  # scale 1: the stages' scales are folded into B
        use_rslora=False,
        base_model_name_or_path=base_model,
        inference_mode=True,
        # The same targets in every stage keep their (regex) spelling; otherwise the exact module paths.
        target_modules=adapters[-1].config.get("target_modules") if len(targets) == 1 else modules,
    )
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


# --------------------------------------------------------------------------- what changed vs the base


@dataclass
class ChangeReport:
    """Differences between a trained model and its base, module by module."""

    tensors: int = 0
    changed: dict[Module, list[str]] = field(default_factory=lambda: {m: [] for m in MODULES})
    lora_explained: list[str] = field(default_factory=list)  # changed exactly by the LoRA deltas
    lora_mismatch: list[tuple[str, float]] = field(default_factory=list)  # (key, max abs error)
    structure: list[str] = field(default_factory=list)  # keys only on one side, shape changes

    @property
    def adapter_only(self) -> bool:
        """True when base + the adapters reproduces the trained model: an adapter export is sound."""
        return not self.structure and not self.lora_mismatch and not any(self.changed.values())

    def reasons(self) -> list[str]:
        """Human-readable reasons why an adapter-only export would not reproduce the model."""
        out = []
        for module in MODULES:
            keys = self.changed[module]
            if keys:
                out.append(f"{module}: {len(keys)} tensor(s) changed outside LoRA (e.g. {keys[0]})")
        if self.lora_mismatch:
            key, err = max(self.lora_mismatch, key=lambda x: x[1])
            out.append(
                f"language: {len(self.lora_mismatch)} LoRA-adapted weight(s) differ from base + adapter "
                f"(max error {err:.2e} at {key}: the layer was also trained in full)"
            )
        if self.structure:
            out.append(f"model structure differs from the base ({len(self.structure)}: {self.structure[0]})")
        return out


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


def compare_to_base(base_dir: str | Path, model_dir: str | Path, adapters: list[LoraAdapter]) -> ChangeReport:
    """Compare every tensor of ``model_dir`` with ``base_dir`` (streamed, one tensor at a time).

    A tensor that differs is *explained* when it is a LoRA target of ``adapters`` and equals
    ``base + Σ deltas`` within the dtype's tolerance (relative to the weight's largest magnitude).
    """
    base, model = weight_files(Path(base_dir)), weight_files(Path(model_dir))
    targets: dict[str, list[tuple[LoraAdapter, str]]] = {}  # weight key → (adapter, its module path)
    for a in adapters:
        for m in a.modules:
            targets.setdefault(canonical_key(m) + ".weight", []).append((a, m))
    report = ChangeReport()
    tied = {"lm_head.weight", "model.embed_tokens.weight"}
    for key in sorted(set(base) ^ set(model)):
        if key not in tied:  # tied embeddings may be written once or twice
            report.structure.append(f"{key} only in the {'base' if key in base else 'trained model'}")
    for key in sorted(set(base) & set(model)):
        report.tensors += 1
        tb, tm = _read(base[key]), _read(model[key])
        if tb.shape != tm.shape:
            report.structure.append(f"{key} shape {tuple(tb.shape)} → {tuple(tm.shape)}")
            continue
        if torch.equal(tb.to(tm.dtype), tm):
            continue
        if key in targets:
            adapted = tb.double() + sum(a.delta(m) for a, m in targets[key])
            err = float((adapted - tm.double()).abs().max())
            if err <= _tolerance(tm.dtype) * max(1.0, float(tm.double().abs().max())):
                report.lora_explained.append(key)
            else:
                report.lora_mismatch.append((key, err))
            continue
        report.changed[module_of(key)].append(key)
    return report


# --------------------------------------------------------------------------- merged model folder


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def config_dtype(model_dir: Path) -> str | None:
    """The ``dtype`` (or older ``torch_dtype``) a model's config.json declares."""
    cfg = json.loads((model_dir / "config.json").read_text())
    for c in (cfg, cfg.get("text_config") or {}):
        d = c.get("dtype") or c.get("torch_dtype")
        if d:
            return str(d).removeprefix("torch.")
    return None


def write_merged(model_dir: str | Path, out_dir: str | Path, *, dtype: str | None = None) -> Path:
    """Copy a trained model folder into a servable one, casting floating weights to ``dtype`` if given.

    Trainer state is left behind; ``use_cache`` (off while training) is switched back on, so
    ``generate`` and vLLM see a normal inference config. The tokenizer, processor and chat template
    files travel unchanged: the exported model formats prompts exactly as it was trained.
    """
    from safetensors.torch import load_file, save_file

    src, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = _DTYPES.get(dtype) if dtype else None
    if dtype and target is None:
        raise ExportError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    for f in sorted(src.iterdir()):
        if f.name in _NOT_EXPORTED or f.name.startswith("."):
            continue
        if f.is_dir():
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
        elif f.suffix == ".safetensors" and target is not None:
            state = load_file(str(f))
            state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
            save_file(state, str(out / f.name), metadata={"format": "pt"})
        else:
            shutil.copy2(f, out / f.name)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for c in (cfg, cfg.get("text_config")):
        if isinstance(c, dict):
            if "use_cache" in c:
                c["use_cache"] = True
            if dtype:
                c.pop("torch_dtype", None)
                c["dtype"] = dtype
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok_cfg = out / "tokenizer_config.json"
    has_template = (out / "chat_template.jinja").exists() or (out / "chat_template.json").exists()
    if not has_template and not (tok_cfg.exists() and "chat_template" in tok_cfg.read_text()):
        log.warning("%s: no chat template travelled with the model; serving will fall back to the engine's", out)
    return out

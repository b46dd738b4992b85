"""Three-stage supervised fine-tuning (general → medical → mix) over the ``training`` engine, and export.

``python -m finetune run PIPELINE.yaml`` (what ``torchrun``/``deepspeed`` launch) and ``infimed finetune
run`` call :func:`finetune.recipe.run`; ``infimed finetune export`` calls :func:`finetune.export.export_run`
(merged model or LoRA adapter, always with a model card).
"""

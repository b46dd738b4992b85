"""Continual-pretraining recipe (low→high resolution with packing) over the ``training`` engine.

``python -m pretrain RECIPE.yaml`` (what ``torchrun``/``deepspeed`` launch) and ``infimed pretrain``
run :func:`pretrain.recipe.run`.
"""

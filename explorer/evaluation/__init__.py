"""Evaluation: measuring models and choosing what to forget. Arrays (and models) in, numbers out.

`metrics` (accuracies, MIA, ToW, CKA, weight distances), `lira` (per-sample membership against
exact memorization's subset models), `influence` (training → test influence), `embeddings` (penultimate features and
their 2-D projections), `choice` (forget-set strategies), `unlearning_error` (Thudi et al.'s
bound from a training run alone). Never sees a workspace.
"""

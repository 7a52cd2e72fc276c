"""Memorization: how strongly the model memorized each training sample. Arrays in, arrays out.

`estimator` is Feldman & Zhang's exact estimator (K models on random subsets, trained by
explorer.training.ensembles); `proxies` are the cheap scores (from training dynamics or the final
model); `scores` names every score and the way it points (higher = more memorized once oriented).
"""

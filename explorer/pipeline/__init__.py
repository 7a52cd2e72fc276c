"""The pipeline: each step loads what it needs from the workspace (explorer.store), calls the
packages that compute (training, memorization, unlearning, evaluation) and publishes the result
as a record. The CLI's commands, and through them the app's jobs, are these steps.

checkpoints  train a model, import one          memorize     exact memorization, the proxies
score_sets   publish, find, export score sets   embed        a map of the model's samples
forget_sets  choose and publish a forget set    oracle       retrain without the forget set
runs         bind a method, unlearn, measure    sweeps       tune methods on a grid, RUM by beam
demo         the whole pipeline on digits       cluster      exact memorization's chunks on Ray
score_files  scores made elsewhere, imported    membership   LiRA and influence of an exact score set
"""

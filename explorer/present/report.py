"""A self-contained HTML report of a comparison: the metrics table and every figure, with
plotly.js inlined once, so the file opens anywhere without a network."""

from __future__ import annotations

import html as html_lib
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from ..errors import UserError
from ..evaluation import metrics
from ..store import artifacts
from ..store.workspace import Workspace
from . import comparison, plots


def _figure(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def html(ws: Workspace, run_ids: list[str]) -> str:
    """The report of the given runs (at least one), each run's references included."""
    if not run_ids:
        raise UserError("name at least one run to report on")
    runs = [ws.get(i, "run") for i in run_ids]
    rows = comparison.rows(ws, runs)
    table = pd.DataFrame(rows).to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0)
    parts = [f"<h1>Unlearning report</h1><p>{len(runs)} runs · made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
             " by the unlearning explorer. Reference rows: the original model and the oracle retrained without "
             "the forget set.</p>", table, "<h3>What the metrics mean</h3><ul>" +
             "".join(f"<li><b>{html_lib.escape(label)}</b> — {html_lib.escape(text)}</li>"
                     for label, text in comparison.METRICS.values()) + "</ul>"]
    run_rows = [r for r in rows if not r["run"].startswith("(")]
    first = runs[0]
    for key in ("acc_forget", "acc_retain", "acc_test", "mia_efficacy"):
        parts.append(_figure(plots.metric_bars(run_rows, key, comparison.METRICS[key][0], first["original"].get(key),
                                               (first["oracle"] or {}).get(key))))
    if any(r.get("tow") is not None for r in run_rows):
        parts.append("<h2>ToW against time</h2>" + _figure(plots.tow_vs_seconds(run_rows)))
    parts.extend(_evaluation_sections(ws, runs))
    if len(runs) >= 2:
        a, b = runs[0], runs[1]
        parts.append(f"<h2>A against B</h2><p>A: {html_lib.escape(a['method'])} · {a['id']}; B: "
                     f"{html_lib.escape(b['method'])} · {b['id']}</p>"
                     + pd.DataFrame(comparison.side_by_side(a, b)).to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                                                            na_rep="—", border=0)
                     + _a_against_b_figures(ws, a, b))
    for run in runs:
        parts.append(_run_section(ws, run))
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Unlearning report</title>"
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>{body}</body></html>")


def _evaluation_sections(ws: Workspace, runs: list[dict]) -> list[str]:
    """Forgetting quality F of each (model, forget set) the runs cover, where it was evaluated:
    the table beside ToW, the F chart, both by memorization group and per-sample ε against
    memorization."""
    out = []
    for model_id, fs_id in dict.fromkeys((r["model_id"], r["forget_set_id"]) for r in runs):
        evaluations = ws.find("evaluation", model_id=model_id, forget_set_id=fs_id)
        if not evaluations:
            continue
        rows = comparison.evaluation_rows(evaluations, [r for r in runs if r["model_id"] == model_id])
        out.append(f"<h2>Forgetting quality · {html_lib.escape(fs_id)}</h2><p>N runs of each method against N models "
                   "retrained without the forget set (the NeurIPS 2023 unlearning competition's evaluation). F: the "
                   "mean bucket score of ε per forget sample (1 = no sample told apart), on a simultaneous 95% lower "
                   "bound of ε (0 for a perfect unlearner in ≥ 95% of samples); F (point): on the competition's own "
                   "point estimate, as its code computes it; KLoM: KL divergence of the unlearned and retrained "
                   "models' margin histograms (0 = as retrained).</p>"
                   + _table(rows) + _figure(plots.forgetting_quality(rows)))
        by_group = comparison.group_rows(ws, evaluations)
        if by_group:
            out.append("<h3>By memorization group</h3><p>The forget set in terciles of its memorization (RUM's "
                       "split): the memorized samples are the hard ones to forget.</p>"
                       + _table(by_group) + _figure(plots.forgetting_by_group(by_group)))
        mem = artifacts.memorization_of(ws, ws.get(model_id, "model"))
        if mem is not None:
            out.append(_figure(plots.epsilon_vs_memorization(comparison.epsilon_points(evaluations, mem[1]), mem[0])))
    return out


def _table(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0)


def _a_against_b_figures(ws: Workspace, a: dict, b: dict) -> str:
    """The forget set's confidences after A against after B, and class accuracy of A, B and the
    oracle, when both runs kept per-sample outputs and share a forget set."""
    sa, sb = artifacts.run_samples(ws, a), artifacts.run_samples(ws, b)
    if sa is None or sb is None or a["forget_set_id"] != b["forget_set_id"]:
        return ""
    ds = artifacts.dataset_of(ws, ws.get(a["model_id"], "model"))
    forget = np.asarray(ws.get(a["forget_set_id"], "forget_set")["ids"])
    y_test = ds.y_test.numpy()
    acc = {f"A: {a['method']}": comparison.class_accuracies(sa, y_test, ds.num_classes)["unlearned"],
           f"B: {b['method']}": comparison.class_accuracies(sb, y_test, ds.num_classes)["unlearned"]}
    return (_figure(plots.score_vs_score(sa["unlearned_train_confidence"][forget], sb["unlearned_train_confidence"][forget],
                                         forget, ds.y_train.numpy()[forget], f"A ({a['method']}) confidence",
                                         f"B ({b['method']}) confidence"))
            + _figure(plots.class_accuracy_bars(acc, ds.classes)))


def _run_section(ws: Workspace, run: dict) -> str:
    out = [f"<h2>{html_lib.escape(run['method'])} · {run['id']}</h2>",
           f"<p><code>{html_lib.escape(comparison.settings_text(run['params']))}</code></p>",
           _figure(plots.before_after(run["original"], run["metrics"], run["oracle"]))]
    samples = artifacts.run_samples(ws, run)
    if samples is None:
        return "\n".join(out)
    ds = artifacts.dataset_of(ws, ws.get(run["model_id"], "model"))
    forget = np.asarray(ws.get(run["forget_set_id"], "forget_set")["ids"])
    out.append(_figure(plots.before_after_samples(samples["original_train_confidence"][forget],
                                                  samples["unlearned_train_confidence"][forget], None, forget, "")))
    groups = {w: comparison.loss_groups(samples, forget, ds.n_train, w)
              for w in ("original", "unlearned", "oracle") if f"{w}_train_loss" in samples}
    threshold, _ = metrics.best_threshold(groups["unlearned"]["forget"], groups["unlearned"]["test"])
    out.append(_figure(plots.loss_distributions(groups, threshold)))
    out.append(_figure(plots.class_accuracy_bars(
        comparison.class_accuracies(samples, ds.y_test.numpy(), ds.num_classes), ds.classes)))
    if run.get("analysis"):
        out.append(_figure(plots.cka_lines(run["analysis"])))
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.85em}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4}h2{margin-top:2em;border-top:1px solid #ddd;padding-top:1em}"""

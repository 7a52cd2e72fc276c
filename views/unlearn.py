import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from explorer import commands, unlearning
from explorer.evaluation import forgetting
from explorer.memorization import scores
from explorer.pipeline import evaluate, forget_sets, runs, sweeps
from explorer.runtime import devices
from explorer.present import plots
from explorer.errors import UserError
from explorer.unlearning import presets, sequence
from views import ui

ws = ui.workspace()
st.title("Unlearn")
st.caption("Pick a model, a forget set and one or several methods. The first run on a forget set also retrains the "
           "**oracle** (the model trained without the forget set), and every result is judged against it. "
           "[RUM](https://arxiv.org/abs/2406.04496) splits the forget set by memorization and unlearns the parts "
           "in sequence.")
ui.last_job_message()

rec = ui.pick_model(ws, "unlearn_pick")
if rec is None:
    st.stop()
sets = [f for f in ws.find("forget_set") if f["dataset_id"] == rec["dataset_id"]][::-1]
if not sets:
    st.info("No forget set for this model's dataset yet: select samples on the **Explore** page.")
    st.stop()

fs = st.selectbox("Forget set", sets, format_func=lambda f: f"{f['name']} · {f['size']} samples · {f['id']}")
ds = ui.dataset(ws, rec)
available = ui.available_scores(ws, rec)
c1, c2, c3, c4 = st.columns(4)
c1.metric("samples", fs["size"])
c2.metric("classes", len(fs["classes"]), help=" · ".join(f"{ds.classes[int(c)]}: {n}" for c, n in fs["class_counts"].items()))
c3.metric("entanglement (ES)", f"{fs['es']:.1f}", help="How mixed the forget set is with the rest in the model's "
          "feature space (RUM). Higher = harder to unlearn." + ("" if fs["es_centre"] != "pooled" else
          " This set was saved before the score followed the RUM code (centre over all samples, not halfway "
          "between R and S): it reads lower than the published scale."))
if "exact" in available:
    mem = available["exact"][fs["ids"]]
    c4.metric("mean memorization", f"{np.nanmean(mem):.3f}",
              help="Exact memorization: " + " · ".join(f"{name} {n}" for name, n in zip(
                  ("low (< 1/3)", "mid", "high (≥ 2/3)"), np.histogram(mem, [-np.inf, 1 / 3, 2 / 3, np.inf])[0])))

preset = st.selectbox("Preset", list(presets.PRESETS), index=list(presets.PRESETS).index(runs.preset_of(rec)),
                      help="paper-*: the settings of the papers' code for that dataset (paper: CIFAR-10's), batch "
                           "256. digits: calibrated on the embedded dataset by a sweep, batch 64. A sweep below tunes "
                           "them for your forget set.")
st.caption(f"Preset **{preset}**: {presets.SOURCES[preset]}.")
chosen = st.multiselect("Methods", unlearning.NAMES, default=[unlearning.FIRST],
                        format_func=lambda n: f"{n} (the oracle itself)" if unlearning.resolve(n).from_init else n)
own = st.text_input("Your own method (optional)", placeholder="path/to/file.py:ClassName or module:ClassName",
                    help="A subclass of explorer.unlearning.Method: its `spec` and its loss on the shared loop, or its "
                         "own `unlearn` (docs/methods.md has a ten-line example). Naming it imports the file: its "
                         "code runs, as `python` would run it.").strip()
if own:
    where, _, class_name = own.rpartition(":")
    if where.endswith(".py"):  # the job runs in another folder: name the file absolutely
        own = f"{Path(where).expanduser().resolve()}:{class_name}"
    try:
        unlearning.resolve(own)
        chosen = [*chosen, own]
    except unlearning.ParamError as err:
        st.error(str(err))


def base_params(name: str, key: str) -> dict:
    """An input per parameter the method's spec offers a form (unlearning.Param), at the preset's
    values: a choice as a radio, a 0/1 switch as a checkbox, a number within its range."""
    cls = unlearning.resolve(name)
    values = {**{k: p.default for k, p in cls.spec.items()}, **presets.settings(preset, name)}
    shown = [(k, p) for k, p in cls.spec.items() if not p.hidden]
    out = {}
    for k, p in shown:
        if p.choices:
            out[k] = st.radio(p.label or k, list(p.choices), index=list(p.choices).index(values[k]), horizontal=True,
                              key=f"{key}-{k}", help=p.help or None)
    numbers = [(k, p) for k, p in shown if not p.choices]
    if not shown:
        st.caption("No settings to choose: it follows the model's own training recipe.")
    for col, (k, p) in zip(st.columns(len(numbers)) if numbers else [], numbers):
        label, v = p.label or k, values[k]
        if p.switch:
            out[k] = int(col.checkbox(label, bool(v), key=f"{key}-{k}", help=p.help or None))
        elif isinstance(p.default, int):
            out[k] = col.number_input(label, int(p.low), None if p.high is None else int(p.high), int(v),
                                      key=f"{key}-{k}", help=p.help or None)
        else:
            out[k] = col.number_input(label, float(p.low), None if p.high is None else float(p.high), float(v),
                                      format="%g", key=f"{key}-{k}", help=p.help or None)
    return out


def sequence_params(name: str, cls) -> dict | None:
    """A sequence's groups and a step per group: refined by a memorization score when the sequence
    needs one (RUM), else random equal parts (shuffle). None when it cannot run on this model."""
    refines = "score" in cls.needs
    if refines:
        if not available:
            st.warning(f"{name} needs a memorization score: compute one on the **Memorization** page.")
            return None
        c1, c2 = st.columns(2)
        score = c1.selectbox("Refine by", list(available), key=f"{name}-score",
                             format_func=lambda n: f"{scores.oriented_name(n)} · {scores.label(n)}")
        order = c2.radio("Order", ["low-high", "high-low"], horizontal=True, key=f"{name}-order")
        cuts = st.text_input("Thresholds (blank = terciles of the forget set)", key=f"{name}-cuts",
                             help="Oriented score values t1 < t2 < … splitting the groups, e.g. 0.3, 0.7.")
        try:
            thresholds = [float(t) for t in cuts.replace(",", " ").split()] or None
            groups = sequence.split(scores.oriented(score, available[score]), np.asarray(fs["ids"]), thresholds)
        except ValueError:
            st.error("Thresholds must be numbers, e.g. 0.3, 0.7")
            return None
        except unlearning.ParamError as err:
            st.warning(str(err))
            return None
        params = {"score": score, "order": order, **({"thresholds": thresholds} if thresholds else {})}
        defaults = sequence.FULL_RUM + [sequence.FULL_RUM[-1]] * 10
    else:
        parts = int(st.number_input("Parts", 1, 10, 3, key=f"{name}-parts", help="Random equal parts, in sequence."))
        groups, params, defaults = np.array_split(np.asarray(fs["ids"]), parts), {"parts": parts}, [unlearning.FIRST] * parts
    steps = []
    options = ["none", *unlearning.REGISTRY]
    for col, gname, group, default in zip(st.columns(len(groups)), sequence.group_names(len(groups)), groups, defaults):
        steps.append(col.selectbox(f"{gname} ({len(group)} samples)", options, index=options.index(default),
                                   key=f"{name}-{gname}"))
    st.caption("Each group's method runs with its preset settings; a **sweep** tunes them group by group.")
    return {**params, "steps": steps}


settings: dict[str, dict] = {}
for name in chosen:
    cls = unlearning.resolve(name)
    with st.expander(f"**{name}** settings", expanded=issubclass(cls, unlearning.Sequence) or cls.whole_classes):
        st.caption(cls.summary)
        if issubclass(cls, unlearning.Sequence):
            if (params := sequence_params(name, cls)) is not None:
                settings[name] = params
            continue
        if cls.whole_classes:
            partial = [c for c, n in fs["class_counts"].items() if n != int((ds.y_train == int(c)).sum())]
            if partial:
                st.warning(f"{name} forgets whole classes, and this forget set holds only part of classes "
                           f"{', '.join(partial)}.")
                if st.button(f"Make a forget set of classes {', '.join(fs['class_counts'])}", key=f"{name}-classes"):
                    made = forget_sets.create(ws, rec, "class", classes=[int(c) for c in fs["class_counts"]])
                    st.success(f"Made {made['id']} ({made['size']} samples): pick it above.")
                continue
        params = base_params(name, f"p-{name}")
        try:  # what the method needs of the model, loaded as a run would: one line when the model lacks it
            needed = runs.needed(ws, rec, unlearning.make(name, params, preset))
        except UserError as err:
            st.warning(str(err))
            continue
        for need in (n for n in cls.optional if needed.get(n) is None):
            st.info(f"This model lacks {unlearning.NEEDS[need]}; {name} can do without it: see its settings.")
        settings[name] = params
        if preview := cls.preview(needed, fs["ids"], params):  # before the run: what it will do
            st.info(preview["text"])
            for warning in preview.get("warnings", []):
                st.warning(warning)

with_oracle = st.toggle("Retrain the oracle", True, help="Needed for ToW and the speed-up. For a large model you "
                        "may skip it: those metrics are then shown as missing, never guessed.")
beam = sweeps.BEAM
if any(issubclass(unlearning.resolve(n), unlearning.Sequence) for n in chosen):
    beam = int(st.number_input("Sweep search width (beam)", 1, 64, sweeps.BEAM,
                               help="How many partial sequences a sweep keeps per group while tuning RUM and "
                                    "shuffle. Wider finds better sequences, at that many times the trials "
                                    "(on the digits, 8 takes about twice as long as 2)."))
c1, c2 = st.columns(2)
if c1.button("Run", type="primary", disabled=not settings, help="One job per method."):
    for name, params in settings.items():
        ui.launch(ws, commands.unlearn(rec["id"], fs["id"], name, params, preset, with_oracle),
                  f"{name} on {fs['name']}", f"unlearn_job-{name}")
sweepable = [n for n in chosen if sweeps.can_sweep(n)]
score_for_sweep = next((p["score"] for p in settings.values() if "score" in p), "exact")
if c2.button("Sweep", disabled=not sweepable or not with_oracle,
             help=f"Try a small grid per method (lr × {{{', '.join(f'{f:g}' for f in sweeps.LR_FACTORS)}}}, epochs × "
                  f"{{{', '.join(f'{f:g}' for f in sweeps.EPOCH_FACTORS)}}}, its knob) and keep the best by "
                  "ToW; RUM and shuffle are tuned group by group from the base methods chosen."):
    ui.launch(ws, commands.sweep(rec["id"], fs["id"], sweepable, preset, score_for_sweep, beam),
              f"sweep on {fs['name']}", "sweep_job")
for name in chosen:
    ui.job_status(ws, f"unlearn_job-{name}")
ui.job_status(ws, "sweep_job")

if st.toggle("Evaluate forgetting quality F", help="The NeurIPS 2023 unlearning competition's evaluation: each chosen "
             "method run N times (seeds 0…N−1) against N models retrained without the forget set; per forget sample, "
             "how well an attacker tells the two apart (ε). Shown on Compare."):
    c1, c2 = st.columns(2)
    n_eval = int(c1.number_input("N (runs and oracles)", 4, 512, evaluate.MODELS,
                                 help="The competition used 512; 32 gives F on the digits in minutes."))
    with_none = c2.checkbox("also the original, unchanged", True, help="The floor every method should beat: F = 0.")
    top, top_point = forgetting.cap(n_eval, n_eval), forgetting.cap(n_eval, n_eval, confidence=None)
    st.caption(f"At N = {n_eval}, F's 95% bound tells samples apart up to ε = {top:.2f} (the competition's point "
               f"estimate up to {top_point:.0f}, without a guarantee); KLoM needs no cap." if top > 0 else
               f"At N = {n_eval}, 95% confidence resolves no ε: F will be empty (it needs N ≥ 10, 1.28 at 32); the "
               f"competition's point estimate and KLoM are still computed.")
    targets = [*settings, *(["none"] if with_none else [])]
    dev = devices.resolve("auto")
    for name in targets:
        st.caption(f"**{name}**: {evaluate.cost(ws, rec, fs, name, n_eval, dev)['text']}")
    if st.button("Evaluate", disabled=not targets, help="One job per method; the oracles are trained once and shared."):
        for name in targets:
            ui.launch(ws, commands.evaluate(rec["id"], fs["id"], name, n_eval, settings.get(name),
                                            preset if name in settings else None),
                      f"evaluate {name} on {fs['name']}", f"evaluate_job-{name}")
    for name in targets:
        ui.job_status(ws, f"evaluate_job-{name}")

# -- results on this forget set -----------------------------------------------------------------
done = ws.find("run", model_id=rec["id"], forget_set_id=fs["id"])[::-1]
if done:
    st.subheader("Runs on this forget set")
    st.dataframe(pd.DataFrame([{
        "method": r["method"], "run": r["id"], "forget acc": r["metrics"]["acc_forget"],
        "oracle forget acc": (r["oracle"] or {}).get("acc_forget"), "ToW": r["metrics"]["tow"],
        "seconds": r["metrics"]["seconds"], "speed-up": r["metrics"]["speedup"],
        "settings": json.dumps({k: v for k, v in r["params"].items() if k not in ("momentum", "weight_decay")})}
        for r in done]), hide_index=True, column_config={
            **{k: st.column_config.NumberColumn(format="%.3f") for k in ("forget acc", "oracle forget acc", "ToW")},
            "seconds": st.column_config.NumberColumn(format="%.2f"),
            "speed-up": st.column_config.NumberColumn(format="%.0f×", help="oracle's training time / the method's")})
    st.page_link("views/compare.py", label="Compare them in detail", icon=":material/arrow_forward:")

found = ws.find("sweep", model_id=rec["id"], forget_set_id=fs["id"])
if found:
    last = found[-1]
    st.subheader("Latest sweep")
    st.caption(f"{len(last['points'])} settings · preset {last.get('preset')} · the line joins the settings no other "
               "beats on both ToW and time.")
    ui.chart(st, plots.sweep_front(last["points"], sweeps.front(last["points"])), key="sweep_front")
    st.dataframe(pd.DataFrame([{**{k: row[k] for k in ("method", "tow", "acc_forget", "seconds", "run_id")},
                                "settings": json.dumps(row["params"])} for row in sweeps.summary(last)]),
                 hide_index=True, column_config={k: st.column_config.NumberColumn(format="%.3f")
                                                 for k in ("tow", "acc_forget", "seconds")})

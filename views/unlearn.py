import json

import numpy as np
import pandas as pd
import streamlit as st

from explorer import unlearning
from explorer.evaluation import forgetting
from explorer.memorization import scores
from explorer.pipeline import evaluate, forget_sets, runs, sweeps
from explorer.runtime import devices
from explorer.present import plots
from explorer.store import artifacts
from explorer.unlearning import deepobliviate, presets, sequence
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
          "feature space (RUM). Higher = harder to unlearn." + ("" if fs.get("es_centre") else
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
chosen = st.multiselect("Methods", unlearning.NAMES, default=["finetune"],
                        format_func=lambda n: f"{n} (the oracle itself)" if n == "retrain" else n)


def base_params(name: str, key: str) -> dict:
    """Number inputs for a base method's parameters, at the preset's values, and its rule."""
    cls = unlearning.REGISTRY[name]
    values = {**cls.defaults, **presets.settings(preset, name)}
    out = {}
    if cls.rules:  # the one string parameter, at the preset's choice
        chosen_rule = values.pop("rule", cls.rules[0])
        out["rule"] = st.radio(cls.rule_label, list(cls.rules), index=list(cls.rules).index(chosen_rule),
                               horizontal=True, key=f"{key}-rule", help=cls.rule_help)
    for choice, options in cls.choices.items():  # the method's other string parameters
        picked = values.pop(choice, options[0])
        out[choice] = st.radio(cls.choice_labels.get(choice, choice), list(options), index=list(options).index(picked),
                               horizontal=True, key=f"{key}-{choice}", help=cls.choice_help.get(choice))
    shown = [k for k in values if k not in cls.hidden]  # rarely changed, or unused by this method
    if not shown:
        st.caption("No settings to choose: it follows the model's own training recipe.")
        return out
    for col, k in zip(st.columns(len(shown)), shown):
        v = values[k]
        out[k] = (col.number_input(k, 0, 10_000, int(v), key=f"{key}-{k}") if isinstance(v, int)
                  else col.number_input(k, 0.0, 1e6, float(v), format="%g", key=f"{key}-{k}"))
    return out


settings: dict[str, dict] = {}
for name in chosen:
    with st.expander(f"**{name}** settings", expanded=name in ("rum", "mnemonic")):
        if name in unlearning.REGISTRY:
            st.caption(unlearning.REGISTRY[name].summary)
        if name == "rum":
            st.caption(unlearning.Rum.summary)
            if not available:
                st.warning("RUM needs a memorization score: compute one on the **Memorization** page.")
                continue
            c1, c2 = st.columns(2)
            score = c1.selectbox("Refine by", list(available), key="rum-score",
                                 format_func=lambda n: f"{scores.oriented_name(n)} · {scores.label(n)}")
            order = c2.radio("Order", ["low-high", "high-low"], horizontal=True, key="rum-order")
            cuts = st.text_input("Thresholds (blank = terciles of the forget set)", key="rum-cuts",
                                 help="Oriented score values t1 < t2 < … splitting the groups, e.g. 0.3, 0.7.")
            try:
                thresholds = [float(t) for t in cuts.replace(",", " ").split()] or None
            except ValueError:
                st.error("Thresholds must be numbers, e.g. 0.3, 0.7")
                continue
            try:
                groups = sequence.split(scores.oriented(score, available[score]), np.asarray(fs["ids"]), thresholds)
            except unlearning.ParamError as err:
                st.warning(str(err))
                continue
            steps = []
            for col, gname, group, default in zip(st.columns(len(groups)), sequence.group_names(len(groups)), groups,
                                                  sequence.FULL_RUM + ["salun"] * 10):
                with col:
                    step = st.selectbox(f"{gname} ({len(group)} samples)", ["none", *unlearning.REGISTRY],
                                        index=["none", *unlearning.REGISTRY].index(default), key=f"rum-{gname}")
                    steps.append(step)
            settings[name] = {"score": score, "order": order, "steps": steps,
                              **({"thresholds": thresholds} if thresholds else {})}
            st.caption("Each group's method runs with its preset settings; a **sweep** tunes them group by group.")
        elif name == "mnemonic":
            whole = [c for c, n in fs["class_counts"].items() if n == int((ds.y_train == int(c)).sum())]
            if len(whole) < len(fs["class_counts"]):
                st.warning(f"Mnemonic forgets whole classes, and this forget set holds only part of classes "
                           f"{', '.join(c for c in fs['class_counts'] if c not in whole)}.")
                if st.button(f"Make a forget set of classes {', '.join(fs['class_counts'])}"):
                    made = forget_sets.create(ws, rec, "class", classes=[int(c) for c in fs["class_counts"]])
                    st.success(f"Made {made['id']} ({made['size']} samples): pick it above.")
                continue
            if not rec.get("has_codes"):
                st.info("This model was trained without mnemonic codes: set with_data to 1 to probe a few real "
                        "samples per class instead, or train with the mnemonic option on the Models page.")
            settings[name] = base_params(name, "p-mnemonic")
        elif name == "deepobliviate":
            st.caption(unlearning.REGISTRY[name].summary)
            if not rec.get("blocks"):
                st.warning("DeepObliviate needs a model trained block by block: train one with **Blocks** on the "
                           "Models page (or `train --blocks 20`).")
                continue
            settings[name] = base_params(name, "p-deepobliviate")
            # Before the run: where the forget set sits in the chain, and what that costs the speed-up.
            chain_plan = deepobliviate.plan(artifacts.open_blocks(ws, rec).ids, fs["ids"],
                                            settings[name].get("requests", "set"), settings[name].get("rule", "ratio"))
            st.info(chain_plan["text"])
            for warning in chain_plan["warnings"]:
                st.warning(warning)
        elif name == "shuffle":
            st.caption(unlearning.Shuffle.summary)
            step = st.selectbox("Method for every part", list(unlearning.REGISTRY), index=1, key="shuffle-step")
            settings[name] = {"steps": step}
        else:
            settings[name] = base_params(name, f"p-{name}")

with_oracle = st.toggle("Retrain the oracle", True, help="Needed for ToW and the speed-up. For a large model you "
                        "may skip it: those metrics are then shown as missing, never guessed.")
beam = sweeps.BEAM
if {"rum", "shuffle"} & set(chosen):
    beam = int(st.number_input("Sweep search width (beam)", 1, 64, sweeps.BEAM,
                               help="How many partial sequences a sweep keeps per group while tuning RUM and "
                                    "shuffle. Wider finds better sequences, at that many times the trials "
                                    "(on the digits, 8 takes about twice as long as 2)."))
c1, c2 = st.columns(2)
if c1.button("Run", type="primary", disabled=not settings, help="One job per method."):
    for name, params in settings.items():
        ui.launch(ws, ["unlearn", rec["id"], "--forget", fs["id"], "--method", name, "--preset", preset,
                       "--params", json.dumps(params), *([] if with_oracle else ["--no-oracle"])],
                  f"{name} on {fs['name']}", f"unlearn_job-{name}")
sweepable = [n for n in chosen if n in (*sweeps.SWEEPABLE, *sweeps.SEQUENCES)]
score_for_sweep = settings.get("rum", {}).get("score", "exact")
if c2.button("Sweep", disabled=not sweepable or not with_oracle,
             help="Try a small grid per method (lr × {0.2, 1, 5}, epochs × {½, 1}, its knob) and keep the best by "
                  "ToW; RUM and shuffle are tuned group by group from the base methods chosen."):
    ui.launch(ws, ["unlearn", rec["id"], "--forget", fs["id"], "--method", ",".join(sweepable), "--sweep",
                   "--preset", preset, "--score", score_for_sweep, "--beam", str(beam)], f"sweep on {fs['name']}",
              "sweep_job")
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
            ui.launch(ws, ["evaluate", rec["id"], "--forget", fs["id"], "--method", name, "--models", str(n_eval),
                           *(["--preset", preset, "--params", json.dumps(settings[name])] if name != "none" else [])],
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

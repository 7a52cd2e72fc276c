import secrets
from pathlib import Path

import pandas as pd
import streamlit as st

from explorer import commands, data, models
from explorer.present import plots
from views import ui

ws = ui.workspace()
st.title("Models")
st.caption("Train a classifier here, recording how every sample is learned epoch by epoch (the cheap memorization "
           "proxies come from that record), or import one. Flip a few labels to see memorization at work: a "
           "mislabeled sample can only be fit by memorizing it ([Feldman & Zhang 2020](https://arxiv.org/abs/2008.03703)).")
finished = st.session_state.get("last_job") or {}
ui.last_job_message()
if finished.get("title", "").startswith("import ") and finished.get("result_id"):
    # Right after an import: how the model does here, the first check that it was read right.
    imported = ws.get(finished["result_id"], "model")
    mapped = f" Mapped from the {imported['layout']} layout: {'; '.join(imported['mapped'])}." if imported.get("mapped") else ""
    st.info(f"{imported['name']}: train accuracy {imported['train_acc']:.3f}, test accuracy "
            f"{imported['test_acc']:.3f}.{mapped}")
    if imported.get("warning"):
        st.warning(imported["warning"])

NORMALIZE_CHOICES = {
    "auto": "the file's own normalize.mean/std if it has them (RUM, SalUn), else dataset",
    "dataset": "the explorer's standardized pixels, what its own models get",
    "none": "[0, 1] pixels",
    "MEAN/STD": "(p − mean) / std of [0, 1] pixels p, per channel: give them below",
}


def train_form() -> None:
    with st.form("train"):
        c1, c2, c3 = st.columns(3)
        dataset = c1.selectbox("Dataset", list(data.SOURCES), help="digits (8×8) and mnist5k (5,000 real 28×28 MNIST "
                                                                   "digits) are embedded; the others load from the data root.")
        arch = c2.selectbox("Architecture", list(models.ARCHS), index=list(models.ARCHS).index("cnn"),
                            help="sigmoid_mlp is the mnemonic-code paper's MNIST model; left empty, its recipe is "
                                 "the paper's, codes included.")
        recipe = ui.recipe_inputs((c3, c1, c2))
        noise = c1.slider("Label noise", 0.0, 0.5, 0.0, 0.01, help="Fraction of training labels flipped to another class. Mislabeled samples can only be fit by memorizing them; the default recipes fit them on digits and mnist5k.")
        root = c2.text_input("Data root", "data", help="Folder holding torchvision datasets or an ImageFolder.")
        curv = c3.checkbox("Record loss curvature", help="Score every sample's loss curvature in each epoch, during "
                           "training, as the RUM code does, for the curvature_avg proxy (its average over training). "
                           "Two more input-gradient passes per batch; the weights are the same without it. Not with "
                           "blocks.")
        if st.form_submit_button("Train", type="primary"):
            argv = commands.train(dataset, arch, recipe, label_noise=noise, data_root=root,
                                  curvature_every=1 if curv else 0)
            ui.launch(ws, argv, f"train {dataset} {arch}", "train_job")
    ui.job_status(ws, "train_job")


def import_form() -> None:
    with st.form("import"):
        upload = st.file_uploader("Weights", type=["safetensors", "pt", "pth", "tar", "bin"],
                                  help="safetensors, or a torch file of tensors (loaded with weights_only=True): a plain "
                                       "state dict, or one under 'state_dict' (RUM, SalUn) or 'net' (pytorch-cifar).")
        imp_path = st.text_input("…or a weights file on this machine", key="imp_path",
                                 help="For checkpoints too large to upload: a path the app's machine can read.")
        c1, c2, c3 = st.columns(3)
        imp_arch = c1.selectbox("Architecture", list(models.ARCHS), key="imp_arch",
                                help="torchvision's, RUM/SalUn's and pytorch-cifar's names for these are recognised "
                                     "and mapped.")
        imp_own = c2.text_input("…or your own architecture", key="imp_own", placeholder="mymodels:Net or timm:resnet18",
                                help="MODULE:CALLABLE imports MODULE (from the folder the app was started in, or an "
                                     "installed package) and calls CALLABLE(**keyword arguments): that runs the "
                                     "module's code, as `python` would, now and whenever the model is loaded. "
                                     "timm:NAME builds timm's architecture (timm installed; no pretrained download). "
                                     "The weights still load only through safetensors or weights_only=True.")
        imp_kwargs = c3.text_input("Keyword arguments (JSON)", key="imp_kwargs", placeholder='{"hidden": 64}',
                                   help="For your own architecture's callable.")
        imp_dataset = c1.selectbox("Dataset it was trained on", list(data.SOURCES), key="imp_ds")
        imp_root = c2.text_input("Data root", "data", key="imp_root")
        imp_split = c3.number_input("Split seed", 0, 2**31 - 1, 0, key="imp_split",
                                    help="The train/test split of the datasets without one of their own (digits, "
                                         "mnist5k, image folders): it must be the one the model was trained on.")
        imp_norm = c1.selectbox("Input it expects", list(NORMALIZE_CHOICES), key="imp_norm",
                                format_func=lambda k: f"{k}: {NORMALIZE_CHOICES[k]}")
        imp_stats = c2.text_input("Mean/std", key="imp_stats", placeholder="0.4914,0.4822,0.4465/0.2470,0.2435,0.2616",
                                  help="Per channel, comma-separated, on [0, 1] pixels; for MEAN/STD.")
        imp_head = c3.text_input("Penultimate layer", key="imp_head", placeholder="the last nn.Linear",
                                 help="The layer whose input the maps and entanglement scores use, e.g. fc2.")
        imp_recipe = st.text_input("Recipe its oracle retrains with (JSON)", key="imp_recipe",
                                   placeholder='{"epochs": 30, "lr": 0.05, "batch_size": 64}',
                                   help="Imported models come without one; the oracle and from-scratch methods "
                                        "use the default recipe unless you give it here.")
        if st.form_submit_button("Import") and (upload is not None or imp_path.strip()):
            if upload is not None:
                suffix = ".safetensors" if upload.name.endswith(".safetensors") else ".pt"
                path = ws.path / "uploads" / f"{secrets.token_hex(8)}{suffix}"  # never the user's file name
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(upload.getvalue())
                shown = upload.name
            else:
                path = Path(imp_path.strip()).expanduser()
                shown = path.name
            arch_name = imp_own.strip() or imp_arch
            argv = commands.import_model(
                str(path), arch_name, imp_dataset, data_root=imp_root, split_seed=int(imp_split), name=shown,
                arch_kwargs=imp_kwargs.strip(), head=imp_head.strip(), recipe=imp_recipe.strip(),
                normalize=None if imp_norm == "auto" else imp_stats.strip() if imp_norm == "MEAN/STD" else imp_norm)
            ui.launch(ws, argv, f"import {shown}", "import_job")  # the command checks it all, in one line
    ui.job_status(ws, "import_job")


def all_models() -> None:
    if not recs:
        st.info("No models yet: train one in the Train tab.")
        return
    cols = ["name", "id", "source", "arch", "dataset", "epochs", "train_acc", "flipped_fit", "test_acc", "seconds", "device"]
    st.dataframe(pd.DataFrame(recs[::-1]).reindex(columns=cols), hide_index=True, column_config={
        "train_acc": st.column_config.NumberColumn("train acc", format="%.3f",
                                                   help="Below 0.99 the model is not in the memorization regime: "
                                                        "its memorization scores mostly say what it failed to learn."),
        "flipped_fit": st.column_config.NumberColumn("flipped fit", format="%.3f",
                                                     help="Share of the flipped (mislabeled) training samples it "
                                                          "predicts as labelled: fitting them takes memorizing them."),
        "test_acc": st.column_config.NumberColumn("test acc", format="%.3f"),
        "seconds": st.column_config.NumberColumn("training time", format="%.1f s"),
    })
    if any(r.get("source") == "oracle" for r in recs):
        st.caption("Oracles are retrained without a forget set to judge unlearning runs; their train accuracy "
                   "includes the forget set they never saw.")

    rec = ui.pick_model(ws, "models_pick", include_oracles=True)
    if rec:
        ds_rec = ws.get(rec["dataset_id"], "dataset")
        left, right = st.columns(2)
        with left:
            if rec.get("log"):
                ui.chart(st, plots.training_curves(rec["log"]), key="curves")
            else:
                st.info("Imported models have no training log.")
        with right:
            ui.chart(st, plots.per_class_accuracy(rec["per_class_acc"], ds_rec["classes"]), key="per_class")
        if ds_rec.get("flipped"):
            st.caption(f"{len(ds_rec['flipped'])} training labels were flipped (label noise {ds_rec['label_noise']:.0%}).")
        if rec.get("block_bytes"):
            st.caption(f"Trained in {rec['blocks']} blocks for `deepobliviate`: the stored block checkpoints "
                       f"(M_0 … M_{rec['blocks']} with momentum) take {rec['block_bytes'] / 2**20:.2f} MiB on disk.")


# One tab drawn at a time: a first visit after the demo shows the models without sending the two
# forms' widgets (30 script files for the browser to load); a new model is shown once its job ends.
if finished.get("state") == "succeeded" and finished.get("title", "").startswith(("train ", "import ")):
    st.session_state["models_tab"] = "All models"
recs = ws.find("model")
if not recs:
    st.info("No models yet: train one below. The default (digits, cnn, 70 epochs, fitting every label) takes about "
            "a minute on a 2-core CPU; the mlp two seconds.")
ui.lazy_tabs({"All models": all_models, "Train": train_form, "Import": import_form}, key="models_tab",
             default="All models" if recs else "Train")

import secrets

import pandas as pd
import streamlit as st

from explorer import data, models, training
from explorer.present import plots
from views import ui

ws = ui.workspace()
st.title("Models")
st.caption("Train a classifier here, recording how every sample is learned epoch by epoch (the cheap memorization "
           "proxies come from that record), or import one. Flip a few labels to see memorization at work: a "
           "mislabeled sample can only be fit by memorizing it ([Feldman & Zhang 2020](https://arxiv.org/abs/2008.03703)).")
ui.last_job_message()

train_tab, import_tab = st.tabs(["Train", "Import"])
with train_tab:
    with st.form("train"):
        c1, c2, c3 = st.columns(3)
        dataset = c1.selectbox("Dataset", list(data.SOURCES), help="digits (8×8) and mnist5k (5,000 real 28×28 MNIST "
                                                                   "digits) are embedded; the others load from the data root.")
        arch = c2.selectbox("Architecture", list(models.ARCHS), index=list(models.ARCHS).index("cnn"))
        epochs = c3.number_input("Epochs", 1, 500, training.Recipe.epochs)
        lr = c1.number_input("Learning rate", 1e-5, 1.0, training.Recipe.lr, format="%.4f")
        batch = c2.number_input("Batch size", 1, 4096, training.Recipe.batch_size)
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0)
        noise = c1.slider("Label noise", 0.0, 0.5, 0.0, 0.01, help="Fraction of training labels flipped to another class. Mislabeled samples can only be fit by memorizing them: train longer (60+ epochs on digits) to see it.")
        root = c2.text_input("Data root", "data", help="Folder holding torchvision datasets or an ImageFolder.")
        tmix = c3.slider("Mnemonic codes (t_mix)", 0.0, 0.5, 0.0, 0.05,
                         help="Swap this fraction of training samples for their class's random code, so the model can "
                              "later forget a class in one shot without data (Yamashita et al.). 0.1 costs well under "
                              "a point of accuracy; 0.3 is used for CIFAR-10.")
        sd = c1.number_input("SD loss λ", 0.0, 1000.0, 0.0, help="Thudi et al.'s regularizer (std of the logits): "
                             "lowers the unlearning and verification errors of single-step SGD unlearning. 0 = off.")
        n_blocks = c2.number_input("Blocks", 0, 1000, 0, help="Train block by block, storing the model after each, "
                                   "for DeepObliviate (e.g. 20; epochs are then per block). 0 = ordinary training.")
        amp = c3.checkbox("Mixed precision (bf16)", help="Forward passes in bfloat16, losses and weights in float32. "
                          "Mostly useful on a GPU (Ampere or newer); on a CPU it is usually slower. Unlearning "
                          "runs on the model use it too.")
        if st.form_submit_button("Train", type="primary"):
            argv = ["train", "--dataset", dataset, "--arch", arch, "--epochs", str(epochs), "--lr", str(lr),
                    "--batch-size", str(batch), "--seed", str(seed), "--label-noise", str(noise), "--data-root", root,
                    "--mnemonic-tmix", str(tmix), "--sd-lambda", str(sd),
                    *(["--blocks", str(n_blocks)] if n_blocks else []), *(["--amp"] if amp else [])]
            ui.launch(ws, argv, f"train {dataset} {arch}", "train_job")
    ui.job_status(ws, "train_job")

with import_tab:
    with st.form("import"):
        upload = st.file_uploader("Weights", type=["safetensors", "pt", "pth", "bin"],
                                  help="safetensors, or a torch file of tensors (loaded with weights_only=True).")
        c1, c2 = st.columns(2)
        imp_arch = c1.selectbox("Architecture", list(models.ARCHS), key="imp_arch")
        imp_dataset = c2.selectbox("Dataset it was trained on", list(data.SOURCES), key="imp_ds")
        imp_root = c1.text_input("Data root", "data", key="imp_root")
        if st.form_submit_button("Import") and upload is not None:
            suffix = ".safetensors" if upload.name.endswith(".safetensors") else ".pt"
            path = ws.path / "uploads" / f"{secrets.token_hex(8)}{suffix}"  # never the user's file name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(upload.getvalue())
            argv = ["import-model", str(path), "--arch", imp_arch, "--dataset", imp_dataset, "--data-root", imp_root,
                    "--name", upload.name]
            ui.launch(ws, argv, f"import {upload.name}", "import_job")
    ui.job_status(ws, "import_job")

recs = ws.find("model")
if not recs:
    st.info("No models yet: train one above. The default (digits, cnn, 30 epochs) takes about ten seconds.")
    st.stop()

st.subheader("All models")
cols = ["name", "id", "source", "arch", "dataset", "epochs", "train_acc", "test_acc", "seconds", "device"]
st.dataframe(pd.DataFrame(recs[::-1]).reindex(columns=cols), hide_index=True, column_config={
    "train_acc": st.column_config.NumberColumn("train acc", format="%.3f"),
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
            st.plotly_chart(plots.training_curves(rec["log"]), key="curves")
        else:
            st.info("Imported models have no training log.")
    with right:
        st.plotly_chart(plots.per_class_accuracy(rec["per_class_acc"], ds_rec["classes"]), key="per_class")
    if ds_rec.get("flipped"):
        st.caption(f"{len(ds_rec['flipped'])} training labels were flipped (label noise {ds_rec['label_noise']:.0%}).")
    if rec.get("block_bytes"):
        st.caption(f"Trained in {rec['blocks']} blocks for `deepobliviate`: the stored block checkpoints "
                   f"(M_0 … M_{rec['blocks']} with momentum) take {rec['block_bytes'] / 2**20:.2f} MiB on disk.")

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import last_json, run_cli, snapshot
from explorer.store import artifacts
from explorer.cli import app

runner = CliRunner()


def cli(ws, *args):
    return runner.invoke(app, [*args, "--workspace", str(ws.path)])


def test_train_list_show_in_json(ws):
    res = cli(ws, "train", "--arch", "mlp", "--epochs", "2", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    model = last_json(res.stdout)
    assert model["kind"] == "model" and model["id"].startswith("m-")
    for key in ("test_acc", "train_acc", "epochs", "arch", "dataset"):
        assert key in model
    listed = json.loads(cli(ws, "list", "models", "--json").stdout)
    assert [m["id"] for m in listed] == [model["id"]]
    shown = last_json(cli(ws, "show", model["id"], "--json").stdout)
    assert shown["epochs"] == 2 and shown["arch"] == "mlp" and shown["dataset"] == "digits"
    assert "mlp" in cli(ws, "list", "models").stdout


def test_train_with_amp_records_it_in_the_recipe(ws):
    res = cli(ws, "train", "--arch", "mlp", "--epochs", "2", "--device", "cpu", "--amp", "--json")
    assert res.exit_code == 0, res.output
    assert last_json(res.stdout)["recipe"]["amp"] is True  # exact memorization and unlearning follow it


def test_forget_set_and_unlearn_contract(populated):
    ws, model = populated["ws"], populated["model"]
    res = cli(ws, "forget-set", "create", "--model", model["id"], "--strategy", "class", "--class", "3",
              "--size", "20", "--json")
    assert res.exit_code == 0, res.output
    fs = last_json(res.stdout)
    assert fs["kind"] == "forget_set" and fs["size"] == 20 and fs["classes"] == [3] and fs["es"] > 0
    res = cli(ws, "unlearn", model["id"], "--forget", fs["id"], "--method", "finetune",
              "--params", '{"epochs": 1}', "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    run = last_json(res.stdout)
    assert run["kind"] == "run"
    for key in ("acc_retain", "acc_forget", "acc_test", "mia_efficacy", "tow", "tow_mia", "seconds",
                "retrain_seconds", "speedup"):
        assert key in run["metrics"]


BAD_INPUTS = [
    ("train", "--arch", "transformer"),
    ("train", "--dataset", "imagenet"),
    ("train", "--epochs", "0"),
    ("train", "--lr", "-0.1"),
    ("train", "--label-noise", "1.5"),
    ("train", "--arch", "vgg16_bn"),  # digits are 8×8
    ("train", "--device", "tpu"),
    ("train", "--dataset", "cifar10", "--data-root", "/nonexistent/cifar"),
    ("import-model", "/nonexistent/weights.safetensors", "--arch", "mlp", "--dataset", "digits"),
    ("show", "m-00000000"),
    ("forget-set", "create", "--model", "m-00000000"),
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=[" ".join(a) for a in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(populated, args, monkeypatch):
    import torchvision

    class Offline:  # keep the test offline even on a machine with internet
        def __init__(self, root, download=False, **kwargs):
            raise RuntimeError("no data")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    ws = populated["ws"]
    before = snapshot(ws)
    res = cli(ws, *args)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert snapshot(ws) == before


def _bad_weight_files(tmp_path, state):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not weights at all")
    save_file(state, tmp_path / "mlp.safetensors")
    small = dict(state)
    small["3.weight"], small["3.bias"] = state["3.weight"][:4], state["3.bias"][:4]
    save_file(small, tmp_path / "four_classes.safetensors")
    return [
        (corrupt, "mlp", "neither a safetensors"),
        (tmp_path / "mlp.safetensors", "cnn", "do not fit a cnn"),
        (tmp_path / "four_classes.safetensors", "mlp", "4 classes but digits has 10"),
    ]


def test_import_model_bad_files_exit_2_and_leave_catalog_unchanged(populated, tmp_path):
    ws = populated["ws"]
    state = artifacts.load_model(ws, populated["model"]).state_dict()
    for path, arch, reason in _bad_weight_files(tmp_path, state):
        before = snapshot(ws)
        res = cli(ws, "import-model", str(path), "--arch", arch, "--dataset", "digits")
        assert res.exit_code == 2 and reason in res.stderr, res.output
        assert snapshot(ws) == before


def test_import_model_accepts_good_weights(ws, tmp_path, populated):
    state = artifacts.load_model(populated["ws"], populated["model"]).state_dict()
    torch.save(state, tmp_path / "w.pt")
    res = cli(ws, "import-model", str(tmp_path / "w.pt"), "--arch", "mlp", "--dataset", "digits", "--json")
    assert res.exit_code == 0, res.output
    assert last_json(res.stdout)["test_acc"] == pytest.approx(populated["model"]["test_acc"])


@pytest.mark.parametrize("params, message", [("{not json", "not valid JSON"), ('{"epochz": 3}', "no parameter"),
                                             ("[1]", "JSON object")])
def test_unlearn_bad_params_exit_2(populated, params, message):
    ws = populated["ws"]
    before = snapshot(ws)
    res = cli(ws, "unlearn", populated["model"]["id"], "--forget", populated["forget_set"]["id"], "--params", params)
    assert res.exit_code == 2 and message in res.stderr
    assert snapshot(ws) == before


def test_unknown_method_exits_2(populated):
    res = cli(populated["ws"], "unlearn", populated["model"]["id"], "--forget", populated["forget_set"]["id"],
              "--method", "forget_everything")
    assert res.exit_code == 2 and "unknown method" in res.stderr


def test_real_process_entry_point(tmp_path):
    res = run_cli("train", "--arch", "mlp", "--epochs", "1", "--json", workspace=tmp_path / "ws")
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["kind"] == "model"
    bad = run_cli("train", "--arch", "nope", workspace=tmp_path / "ws")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown architecture 'nope'; choose one of mlp, sigmoid_mlp, cnn, fast_cnn, resnet18, resnet50, vgg16_bn, or MODULE:CALLABLE, or timm:NAME"


def test_memorize_proxies_and_export_contract(populated, tmp_path):
    ws, model = populated["ws"], populated["model"]
    res = cli(ws, "memorize", model["id"], "--exact", "--models", "4", "--epochs", "2", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    exact = last_json(res.stdout)
    assert exact["kind"] == "scores" and exact["name"] == "exact" and exact["model_id"] == model["id"]
    assert {"seconds", "device", "never_held_out"} <= set(exact)

    res = cli(ws, "proxies", model["id"], "--only", "confidence,bi_acc", "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res.stdout)
    assert [s["name"] for s in out["scores"]] == ["confidence", "bi_acc"] and out["id"] == out["ids"][0]

    res = cli(ws, "export", exact["id"], "--format", "csv")
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "sample_id,label,value,stderr,flipped"  # the populated model has label noise
    assert len(lines) == 1 + artifacts.dataset_of(ws, model).n_train
    res = cli(ws, "export", out["ids"][0], "--format", "json", "--out", str(tmp_path / "conf.json"))
    rows = json.loads((tmp_path / "conf.json").read_text())
    assert set(rows[0]) == {"sample_id", "label", "value", "flipped"}


@pytest.mark.parametrize("args, message", [
    (("--exact", "--ratio", "1.5"), "ratio"),
    (("--exact", "--models", "1"), "at least 2"),
    ((), "--exact"),
])
def test_memorize_bad_input_exits_2(populated, args, message):
    ws = populated["ws"]
    before = snapshot(ws)
    res = cli(ws, "memorize", populated["model"]["id"], *args)
    assert res.exit_code == 2 and message in res.stderr, res.output
    assert snapshot(ws) == before


def test_proxies_and_export_bad_input_exit_2(populated):
    ws = populated["ws"]
    before = snapshot(ws)
    assert cli(ws, "proxies", populated["model"]["id"], "--only", "vibes").exit_code == 2
    res = cli(ws, "export", populated["model"]["id"])
    assert res.exit_code == 2 and "export takes a score set, a run or an evaluation" in res.stderr
    assert snapshot(ws) == before


def test_bad_input_does_not_even_create_the_workspace(tmp_path):
    target = tmp_path / "new"
    for args in (["train", "--epochs", "0"], ["train", "--arch", "vgg16_bn"], ["show", "m-00000000"],
                 ["list", "models"], ["memorize", "m-00000000", "--exact"]):
        res = runner.invoke(app, [*args, "--workspace", str(target)])
        assert res.exit_code == 2, (args, res.output)
        assert not target.exists(), args
    assert "no workspace at" in runner.invoke(app, ["list", "--workspace", str(target)]).stderr


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    for args in (["train", "--no-such-option"], ["train", "--epochs", "many"], ["show"]):
        res = run_cli(*args, workspace=tmp_path / "ws")
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr
    assert not (tmp_path / "ws").exists()


def test_json_never_carries_nan_or_infinity():
    from explorer.cli import _finite

    out = json.dumps(_finite({"es": float("nan"), "m": {"speedup": float("inf")}, "acc": [0.5, float("-inf")]}))
    assert json.loads(out) == {"es": None, "m": {"speedup": None}, "acc": [0.5, None]}

import collections

import pytest
import torch
from safetensors.torch import save_file

from explorer import training
from explorer.pipeline import checkpoints
from explorer.store import artifacts
from explorer.pipeline.checkpoints import CheckpointError
from explorer.data import DatasetSpec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from explorer.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("ck") / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=3), torch.device("cpu"))
    return rec, artifacts.load_model(ws, rec).state_dict()


def test_import_safetensors_reproduces_accuracy(ws, tmp_path, trained):
    rec, state = trained
    save_file(state, tmp_path / "w.safetensors")
    imported = checkpoints.import_model(ws, tmp_path / "w.safetensors", "mlp", DatasetSpec())
    assert imported["test_acc"] == pytest.approx(rec["test_acc"])
    assert imported["source"] == "imported" and not imported["has_dynamics"]


def test_the_command_line_imports_as_the_library_does(tmp_path, trained):
    """import-model is checkpoints.import_model: the same record, the file's name by default, the
    recipe kept for the oracle; the file is checked before the workspace is opened."""
    from typer.testing import CliRunner

    from conftest import last_json
    from explorer.cli import app
    from explorer.store.workspace import Workspace

    torch.save({"net": trained[1], "acc": 97.0}, tmp_path / "w.pt")
    lib = checkpoints.import_model(Workspace(tmp_path / "lib"), tmp_path / "w.pt", "mlp", DatasetSpec(),
                                   recipe=training.Recipe(epochs=7))
    res = CliRunner().invoke(app, ["import-model", str(tmp_path / "w.pt"), "--arch", "mlp", "--dataset", "digits",
                                   "--recipe", '{"epochs": 7}', "--workspace", str(tmp_path / "cli"), "--json"])
    assert res.exit_code == 0, res.output
    cli = last_json(res.stdout)
    same = {k: v for k, v in lib.items() if k not in ("id", "created")}
    assert {k: cli[k] for k in same} == same
    assert cli["name"] == "w.pt" and cli["recipe"]["epochs"] == 7 and cli["recorded_accuracy"]["accuracy"] == 0.97
    res = CliRunner().invoke(app, ["import-model", str(tmp_path / "w.pt"), "--arch", "cnn", "--dataset", "digits",
                                   "--workspace", str(tmp_path / "bad")])
    assert res.exit_code == 2 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s}, lambda s: {"module." + k: v for k, v in s.items()}])
def test_import_torch_files_in_common_layouts(ws, tmp_path, trained, wrap):
    torch.save(wrap(trained[1]), tmp_path / "w.pt")
    assert checkpoints.import_model(ws, tmp_path / "w.pt", "mlp", DatasetSpec())["test_acc"] > 0.5


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x00garbage" * 10), "neither a safetensors"),
    (lambda p: torch.save({"x": Payload()}, p), "neither a safetensors"),  # pickled code is refused
    (lambda p: torch.save([1, 2, 3], p), "no state dict"),
])
def test_unsafe_or_corrupt_files_are_refused(ws, tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        checkpoints.import_model(ws, path, "mlp", DatasetSpec())
    assert ws.find("model") == [] and ws.find("dataset") == []


def test_wrong_architecture_and_class_count_are_refused(ws, tmp_path, trained):
    save_file(trained[1], tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="do not fit a cnn"):
        checkpoints.import_model(ws, tmp_path / "w.safetensors", "cnn", DatasetSpec())
    state = collections.OrderedDict(trained[1])
    state["3.weight"], state["3.bias"] = state["3.weight"][:5], state["3.bias"][:5]
    save_file(dict(state), tmp_path / "five.safetensors")
    with pytest.raises(CheckpointError, match="5 classes but digits has 10"):
        checkpoints.import_model(ws, tmp_path / "five.safetensors", "mlp", DatasetSpec())
    assert ws.find("model") == []

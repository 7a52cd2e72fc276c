"""The memorization regime: default recipes that fit the training set, flipped labels included,
and a warning wherever the scores of a model that does not are shown."""


from conftest import CPU, last_json
from test_pages import open_page
from test_cli import cli
from explorer import training
from explorer.data import DatasetSpec
from explorer.memorization import regime
from explorer.pipeline import checkpoints


def test_the_default_recipe_fits_the_flipped_labels_and_the_record_says_so(ws):
    res = cli(ws, "train", "--dataset", "digits", "--arch", "mlp", "--label-noise", "0.1", "--json")
    assert res.exit_code == 0, res.stderr
    rec = last_json(res.stdout)
    assert rec["recipe"]["epochs"] == training.REGIME["mlp", "digits"]["epochs"]  # no --epochs: the regime's
    assert rec["train_acc"] >= regime.FITS and rec["flipped_fit"] >= 0.9
    assert "warning" not in res.stderr
    shown = last_json(cli(ws, "show", rec["id"], "--json").stdout)
    assert shown["train_acc"] == rec["train_acc"] and shown["flipped_fit"] == rec["flipped_fit"]


def test_an_under_fitted_model_is_flagged_on_the_command_line_and_on_every_scores_page(monkeypatch, ws, populated):
    res = cli(ws, "train", "--dataset", "digits", "--arch", "mlp", "--label-noise", "0.1", "--epochs", "2")
    assert res.exit_code == 0 and "warning: This model fits" in res.stderr and "flipped labels" in res.stderr
    for page in ("memorization", "explore"):
        warned = [w.value for w in open_page(monkeypatch, ws, page).warning]
        assert any("memorization regime" in w for w in warned), page
        fitted = [w.value for w in open_page(monkeypatch, populated["ws"], page).warning]
        assert not any("memorization regime" in w for w in fitted), page


def test_a_record_without_label_noise_has_no_flipped_fit(ws):
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1), CPU)
    assert rec["flipped_fit"] is None
    assert regime.fits({"train_acc": 0.995}) and regime.fits({}) is None and regime.warning({}) is None

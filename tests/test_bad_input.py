"""Bad input wherever it enters, generated (Hypothesis): every command answers with exit 2 and one
line on stderr, writes nothing, and never shows a traceback. The commands run in this process
(`cli.main`, as `python -m explorer` runs it) against one populated workspace."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import cli, unlearning

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)
# Parameter values a method may be handed: out of range, of the wrong type, not finite.
BAD_NUMBERS = st.sampled_from([-1, -0.5, 0, 1e30, float("nan"), float("inf"), -float("inf"), 2.5, "x", True, None,
                               [], {}])


def _run(capsys, *args: str) -> tuple[int, str]:
    """`python -m explorer ARGS` in this process: its exit code and stderr."""
    saved = sys.argv
    sys.argv = ["explorer", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


def _refused(capsys, ws, *args: str) -> str:
    before = snapshot(ws)
    code, err = _run(capsys, *args, "--workspace", str(ws.path))
    lines = err.strip().splitlines()
    assert code == 2, (args, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (args, err)
    assert snapshot(ws) == before, args
    return lines[0]


@FAST
@given(params=JSON)
def test_any_json_as_params_is_refused_or_taken_never_a_traceback(capsys, populated, params):
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    text = json.dumps(params)
    if isinstance(params, dict):
        try:
            unlearning.make("finetune", params)
            return  # parameters finetune takes (e.g. {}: its defaults): not bad input
        except unlearning.ParamError:
            pass
    _refused(capsys, ws, "unlearn", model["id"], "--forget", fs["id"], "--method", "finetune", "--params", text,
             "--no-oracle")


@FAST
@given(method=st.sampled_from(sorted(unlearning.REGISTRY)), data=st.data())
def test_out_of_range_parameters_of_every_method_are_refused(capsys, populated, method, data):
    spec = unlearning.REGISTRY[method].spec
    key = data.draw(st.sampled_from(sorted(spec)))
    value = data.draw(BAD_NUMBERS if not spec[key].choices else st.text(max_size=6).filter(
        lambda v: v not in spec[key].choices))
    try:
        unlearning.REGISTRY[method].check({key: value})
        return  # a value this parameter takes (0 epochs of nothing is still refused below)
    except unlearning.ParamError:
        pass
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    line = _refused(capsys, ws, "unlearn", model["id"], "--forget", fs["id"], "--method", method,
                    "--params", json.dumps({key: value}), "--no-oracle")
    assert key in line


@FAST
@given(record_id=st.text(min_size=1, max_size=12).filter(lambda t: not t.startswith("-") and t.strip() == t and t))
def test_unknown_ids_are_refused(capsys, populated, record_id):
    ws, fs = populated["ws"], populated["forget_set"]
    if record_id in {r["id"] for kind in ("model", "forget_set", "run") for r in ws.find(kind)}:
        return
    _refused(capsys, ws, "unlearn", record_id, "--forget", fs["id"], "--method", "finetune", "--no-oracle")
    _refused(capsys, ws, "show", record_id)


@FAST
@given(size=st.integers(max_value=0) | st.integers(min_value=10**6), strategy=st.sampled_from(["random", "mix", "low"]))
def test_impossible_forget_set_sizes_are_refused(capsys, populated, size, strategy):
    ws, model = populated["ws"], populated["model"]
    _refused(capsys, ws, "forget-set", "create", "--model", model["id"], "--strategy", strategy, "--size", str(size),
             *(["--scores", "exact"] if strategy != "random" else []))


@FAST
@given(epochs=st.integers(max_value=0), lr=st.floats(max_value=0) | st.just(float("nan")),
       tmix=st.floats(min_value=1.0, allow_infinity=True) | st.floats(max_value=-1e-9))
def test_impossible_recipes_are_refused(capsys, populated, epochs, lr, tmix):
    ws = populated["ws"]
    for flag, value in (("--epochs", epochs), ("--lr", lr), ("--mnemonic-tmix", tmix)):
        _refused(capsys, ws, "train", "--arch", "mlp", flag, str(value))


@FAST
@given(content=st.binary(max_size=64))
def test_any_file_as_weights_or_ids_is_refused(capsys, populated, tmp_path_factory, content):
    ws, model = populated["ws"], populated["model"]
    path = tmp_path_factory.mktemp("junk") / "weights.safetensors"
    path.write_bytes(content)
    _refused(capsys, ws, "import-model", str(path), "--arch", "mlp", "--dataset", "digits")
    ids = path.with_name("ids.txt")
    ids.write_bytes(content + b" -5 x 99999999")
    _refused(capsys, ws, "forget-set", "create", "--model", model["id"], "--strategy", "ids", "--ids-file", str(ids))


@pytest.mark.parametrize("args", [
    ("evaluate", "{model}", "--forget", "{fs}", "--method", "finetune", "--models", "1"),
    ("evaluate", "{model}", "--forget", "{fs}", "--method", "none", "--params", '{"epochs": 1}'),
    ("memorize", "{model}", "--exact", "--models", "1"),
    ("memorize", "{model}", "--exact", "--ratio", "1.5"),
    ("export", "{fs}", "--format", "xml"),
    ("jobs", "--max-jobs", "-3"),
])
def test_bad_sizes_and_formats_elsewhere_are_refused(capsys, populated, args):
    ws = populated["ws"]
    filled = [a.replace("{model}", populated["model"]["id"]).replace("{fs}", populated["forget_set"]["id"]) for a in args]
    _refused(capsys, ws, *filled)

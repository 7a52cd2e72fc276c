"""Command-line interface: a thin shell over the pipeline (docs/architecture.md).

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written), 1 internal error.
With --json the last line on stdout is one JSON object (or, for `list`, one JSON array).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import sys
import traceback
from contextlib import contextmanager
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from . import commands, data, models, queue_cli, training, unlearning
from .data import DatasetSpec
from .errors import UserError, first_line, json_object
from .evaluation import choice, embeddings
from .memorization import proxies, regime
from .memorization.estimator import ExactConfig
from .pipeline import checkpoints, demo as demo_mod, embed, evaluate as evaluate_mod, forget_sets, membership, memorize, runs, score_files, score_sets, sweeps
from .present import comparison
from .queue_cli import JsonOpt, WorkspaceOpt, _finite, _table, emit, fail, query  # noqa: F401 - _finite: the CLI's, for its callers
from .runtime import devices, precision
from .store import jobs
from .store.workspace import Workspace, npz_bytes, write_atomic
from .training import curvature

T = TypeVar("T")
app = typer.Typer(no_args_is_help=True, add_completion=False, help="Memorization-based machine unlearning explorer.")
forget_set_app = typer.Typer(no_args_is_help=True, help="Build forget sets.")
app.add_typer(forget_set_app, name="forget-set")

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")]
JobOpt = Annotated[Optional[str], typer.Option("--job", hidden=True, help="Report into this job row (set by the app).")]


class Listable(str, Enum):
    models = "models"
    scores = "scores"
    forget_sets = "forget-sets"
    runs = "runs"
    sweeps = "sweeps"
    maps = "maps"
    evaluations = "evaluations"
    jobs = "jobs"


LIST_KINDS = {"models": "model", "scores": "scores", "forget-sets": "forget_set", "runs": "run", "sweeps": "sweep", "maps": "embedding", "evaluations": "evaluation"}


@contextmanager
def terminal_progress(enabled: bool):
    """A progress bar on stderr for foreground commands."""
    if not enabled:
        yield lambda fraction, message: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=1.0)
        yield lambda fraction, message: bar.update(task, completed=fraction, description=message)


def execute(workspace: Path | None, job: str | None, as_json: bool, work: Callable[[Workspace, Callable, T], dict],
            summary: Callable[[dict], str], prepare: Callable[[], T] = lambda: None, creates: bool = False) -> dict:
    """Run a command in the foreground or as a job, map errors to exit codes, print the result.

    `prepare` checks the input and builds what `work` needs before the workspace is opened, so
    bad input writes nothing, not even a new workspace; only `creates` commands make one."""
    try:
        if job:
            ws = Workspace(workspace, create=False)
            record = jobs.run(ws, job, lambda progress: work(ws, progress, prepare()))
        else:
            prepared = prepare()
            ws = Workspace(workspace, create=creates)
            with terminal_progress(sys.stderr.isatty()) as progress:
                record = work(ws, progress, prepared)
    except UserError as err:  # caused by what the user asked for: exit 2, one line
        fail(first_line(err))
    except jobs.Cancelled:
        typer.echo("cancelled; nothing half-done was written", err=True)
        raise typer.Exit(143)
    except Exception as err:  # noqa: BLE001 - an internal error: keep the traceback for the log
        traceback.print_exc()
        fail(f"internal error: {err}", code=1)
    emit(record, as_json, summary(record))
    return record


# -- commands ---------------------------------------------------------------------------------


def recipe_options(command: Callable, recipe_cls: type | None = None) -> Callable:
    """One option per recipe field, made from its declaration (training.Recipe's `knob`s): its
    type, its help and where its default comes from. The command receives them as `recipe: dict`,
    None for each option not given, so the architecture's and dataset's default recipe fills it."""
    kinds = {"int": int, "float": float, "bool": bool}
    declared = dataclasses.fields(recipe_cls or training.Recipe)
    base = inspect.signature(command, eval_str=True)
    added = []
    for f in declared:
        flag = commands.option(f.name)
        decl = (f"{flag}/--no-{flag[2:]}",) if training.recipe.kind(f) == "bool" else (flag,)
        help = f"{f.metadata['knob'].help} (default: {training.recipe.default_text(f)})"
        added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=Annotated[Optional[kinds[training.recipe.kind(f)]],
                                                            typer.Option(*decl, help=help, show_default=False)]))
    names = [f.name for f in declared]

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(**{k: v for k, v in kwargs.items() if k not in names}, recipe={k: kwargs[k] for k in names})

    kept = [p for p in base.parameters.values() if p.name != "recipe"]
    wrapper.__signature__ = base.replace(parameters=[*kept[:2], *added, *kept[2:]])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    del wrapper.__wrapped__  # Typer must read the signature above, not the command's own
    return wrapper


@app.command()
@recipe_options
def train(
    dataset: Annotated[str, typer.Option(help="digits, mnist5k, mnist, fashion_mnist, cifar10, cifar100, svhn or imagefolder.")] = "digits",
    arch: Annotated[str, typer.Option(help="mlp, sigmoid_mlp (the mnemonic-code paper's MNIST model, trained with its recipe by default), cnn, fast_cnn (a fast CIFAR net after airbench, with its recipe by default), resnet18, resnet50 or vgg16_bn.")] = "cnn",
    *,
    recipe: dict,
    curvature_every: Annotated[int, typer.Option(help="Also record each sample's loss curvature every K epochs, during training, as the RUM code does (K = 1: every epoch), for the `curvature_avg` proxy; two more input-gradient passes per batch of those epochs. 0 = off (the `curvature` proxy scores the final model instead).")] = 0,
    label_noise: Annotated[float, typer.Option(help="Fraction of training labels flipped to another class.")] = 0.0,
    split_seed: int = 0,
    data_root: Annotated[str, typer.Option(help="Where torchvision datasets live (or the ImageFolder root).")] = "data",
    image_size: Annotated[int, typer.Option(help="Image folders: resize every image to N×N (a folder of mixed sizes needs it; default 0: the images' own size).")] = 0,
    name: Optional[str] = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Train a model from scratch, recording per-sample dynamics, and register it."""

    def prepare():
        chosen = replace(training.default_for(arch, dataset), **{k: v for k, v in recipe.items() if v is not None})
        spec = DatasetSpec(name=dataset, root=data_root, split_seed=split_seed, label_noise=label_noise,
                           image_size=image_size)
        dev = devices.resolve(device)
        if chosen.amp:
            precision.check(dev)  # a GPU without bf16 is refused now, before anything is written
        ds = data.load(spec)
        models.for_dataset(arch, ds)  # the architecture exists and fits the images
        if chosen.blocks > ds.n_train:
            raise training.RecipeError(f"--blocks {chosen.blocks} is more than the {ds.n_train} training samples")
        if curvature_every and chosen.blocks:
            raise training.RecipeError("--curvature-every records into the training dynamics, which block training "
                                       "does not record; leave out --blocks or --curvature-every")
        curvature.recorded_epochs(chosen.epochs, curvature_every)  # refuses K outside 0 … epochs
        return spec, chosen, dev

    def work(ws, progress, prepared):
        spec, recipe, dev = prepared
        return checkpoints.train(ws, spec, arch, recipe, dev, progress, name=name, curvature_every=curvature_every)

    record = execute(workspace, job, as_json, work,
                     lambda r: f"trained {r['id']}: {r['dataset']} {r['arch']}, test acc {r['test_acc']:.3f}, "
                               f"train acc {r['train_acc']:.3f}"
                               + (f", flipped labels fitted {r['flipped_fit']:.3f}"
                                  if r.get("flipped_fit") is not None else "")
                               + f" ({r['seconds']:.1f} s on {r['device']})",
                     prepare=prepare, creates=True)
    if record and (line := regime.warning(record)):
        typer.echo(f"warning: {line}", err=True)


ARCH_HELP = ("The architecture the weights belong to: a registry name (mlp, sigmoid_mlp, cnn, resnet18, resnet50, vgg16_bn; the "
             "layouts of torchvision, RUM/SalUn and pytorch-cifar are recognised and mapped); MODULE:CALLABLE, your "
             "own architecture (e.g. mymodels:Net): this imports MODULE and calls CALLABLE(**--arch-kwargs), running "
             "that code as `python` would, now and whenever the model is loaded; or timm:NAME (needs timm; never "
             "downloads pretrained weights). Either way the weights themselves load only through safetensors or "
             "torch.load(weights_only=True).")


@app.command("import-model")
def import_model(
    file: Annotated[Path, typer.Argument(help="A .safetensors file, or a torch file of weights (loaded with weights_only=True).")],
    arch: Annotated[str, typer.Option(help=ARCH_HELP)],
    dataset: Annotated[str, typer.Option(help="The dataset the model was trained on.")],
    arch_kwargs: Annotated[Optional[str], typer.Option(help='Keyword arguments for MODULE:CALLABLE or timm:NAME, as a JSON object, e.g. \'{"hidden": 64}\'.')] = None,
    normalize: Annotated[Optional[str], typer.Option(help="The input the model expects: dataset (the explorer's standardized pixels, what its own models get), none ([0, 1] pixels), or MEAN/STD (per channel on [0, 1] pixels, comma-separated, e.g. 0.4914,0.4822,0.4465/0.2470,0.2435,0.2616). Kept with the model and applied wherever it is evaluated, trained or unlearned (default: the file's own normalize.mean/std if it has them, as RUM and SalUn save them; else dataset).")] = None,
    head: Annotated[Optional[str], typer.Option(help="The layer whose input is the penultimate features (maps, entanglement), e.g. fc2 (default: the input of the last nn.Linear).")] = None,
    recipe: Annotated[Optional[str], typer.Option(help='The recipe its oracle and from-scratch methods retrain with, as JSON, e.g. \'{"epochs": 30, "lr": 0.05, "batch_size": 64}\' (default: the default recipe).')] = None,
    data_root: str = "data",
    split_seed: int = 0,
    image_size: Annotated[int, typer.Option(help="Image folders: resize every image to N×N (a folder of mixed sizes needs it; default 0: the images' own size).")] = 0,
    name: Optional[str] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Register a model trained elsewhere (no training dynamics); prints its train and test accuracy."""

    spec = DatasetSpec(name=dataset, root=data_root, split_seed=split_seed, image_size=image_size)

    def prepare():
        kwargs = json_object(arch_kwargs, "--arch-kwargs", checkpoints.CheckpointError)
        parsed_recipe = checkpoints.parse_recipe(recipe)  # before any user code runs
        return checkpoints.fit(file, arch, spec, arch_kwargs=kwargs, normalize=normalize, head=head), parsed_recipe

    def work(ws, progress, prepared):
        fitted, parsed_recipe = prepared
        return checkpoints.import_model(ws, file, arch, spec, name, parsed_recipe, fitted=fitted)

    def summary(r):
        mapped = f"\nlayout {r['layout']}: {'; '.join(r['mapped'])}" if r.get("mapped") else ""
        return (f"imported {r['id']}: {r['dataset']} {r['arch']}, train acc {r['train_acc']:.3f}, "
                f"test acc {r['test_acc']:.3f}{mapped}")

    record = execute(workspace, job, as_json, work, summary, prepare=prepare, creates=True)
    if record.get("warning"):
        typer.echo(f"warning: {record['warning']}", err=True)


@forget_set_app.command("create")
def forget_set_create(
    model: Annotated[str, typer.Option(help="Model id whose training set the forget set is drawn from.")],
    strategy: Annotated[str, typer.Option(help=f"{', '.join(s for s in choice.STRATEGIES if s != 'selection')}.")] = "random",
    size: Annotated[Optional[int], typer.Option(help="How many samples (random, a part of a class, low/mid/high/mix).")] = None,
    seed: int = 0,
    class_: Annotated[Optional[list[int]], typer.Option("--class", help="A class to forget, or to draw from (repeatable).")] = None,
    scores_: Annotated[Optional[str], typer.Option("--scores", help="Score-set id that low/mid/high/mix rank by.")] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="Text file of sample ids (whitespace or comma separated).")] = None,
    name: Optional[str] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """Make a forget set of training samples."""

    def prepare():
        if strategy not in choice.STRATEGIES or strategy == "selection":
            raise choice.ForgetSetError(f"unknown strategy {strategy!r}; choose one of "
                                             f"{', '.join(s for s in choice.STRATEGIES if s != 'selection')}")
        if strategy in choice.BY_SCORE and not scores_:
            raise choice.ForgetSetError(f"the {strategy} strategy needs --scores SCORESET (see `list scores`)")
        if strategy != "ids":
            return None
        if ids_file is None:
            raise choice.ForgetSetError("the ids strategy needs --ids-file FILE")
        try:
            return [int(t) for t in ids_file.read_text().replace(",", " ").split()]
        except (OSError, ValueError) as err:
            raise choice.ForgetSetError(f"cannot read sample ids from {ids_file}: {err}") from None

    def work(ws, progress, ids):
        return forget_sets.create(ws, ws.get(model, "model"), strategy, name=name, size=size, seed=seed,
                                  classes=class_, ids=ids, score_id=scores_)

    def summary(r):
        mem = f", mean memorization {r['mean_memorization']:.3f}" if r.get("mean_memorization") is not None else ""
        return f"forget set {r['id']}: {r['size']} samples from classes {r['classes']}, ES {r['es']:.2f}{mem}"

    execute(workspace, None, as_json, work, prepare=prepare, summary=summary)


@app.command("embed")
def embed_(
    model: Annotated[str, typer.Argument(help="Model id.")],
    method: Annotated[str, typer.Option(help="umap, pca or tsne.")] = "umap",
    seed: int = 0,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """A 2-D map of the samples' penultimate features, for the Explore page."""

    def prepare():
        if method not in embeddings.METHODS:
            raise embeddings.MapError(f"unknown map method {method!r}; choose one of {', '.join(embeddings.METHODS)}")
        return devices.resolve(device)

    def work(ws, progress, dev):
        return embed.compute(ws, ws.get(model, "model"), method, seed, dev, progress)

    execute(workspace, job, as_json, work,
            lambda r: f"map {r['id']}: {r['method']} of {r['n_train'] + r['n_test']:,} samples in {r['seconds']:.1f} s",
            prepare=prepare)


@app.command()
def unlearn(
    model: Annotated[str, typer.Argument(help="Model id.")],
    forget: Annotated[str, typer.Option("--forget", help="Forget-set id.")],
    method: Annotated[str, typer.Option(help=f"One of: {', '.join(unlearning.NAMES)}; or your own, MODULE:CLASS or path/to/file.py:CLASS, a subclass of explorer.unlearning.Method (this imports it: its code runs as `python` would run it); with --sweep, a comma-separated list.")] = "finetune",
    params: Annotated[str, typer.Option(help='Method parameters as JSON, e.g. \'{"epochs": 5, "lr": 0.01}\' or, for rum, '
                                            '\'{"score": "exact", "steps": ["none", "finetune", "salun"]}\'.')] = "{}",
    sweep: Annotated[bool, typer.Option("--sweep", help="Try a small grid of settings per method and keep the best of each.")] = False,
    score: Annotated[str, typer.Option(help="The memorization score RUM refines by in a sweep (a name or a score-set id).")] = "exact",
    beam: Annotated[Optional[int], typer.Option(help=f"With --sweep: partial sequences RUM and shuffle keep per group; wider finds better sequences at proportional cost (default: {sweeps.BEAM}).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Settings for parameters not given: paper-cifar10, paper-cifar100, paper-svhn, paper-mnist (the papers' code for that dataset, batch 256), paper (= paper-cifar10) or digits (calibrated, batch 64) (default: the model's dataset's preset if there is one, else paper).")] = None,
    oracle: Annotated[bool, typer.Option("--oracle/--no-oracle", help="Retrain the oracle to measure against (skip it for large models: ToW and speed-up are then missing).")] = True,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Unlearn a forget set and measure the result against the retrained oracle."""

    def prepare():
        parsed = json_object(params, "--params", unlearning.ParamError)
        names = [m.strip() for m in method.split(",") if m.strip()]
        for name in filter(unlearning.is_user_method, names):
            typer.echo(f"running your own method {name} (its module is imported)", err=True)
        if sweep:
            if not oracle:
                raise unlearning.ParamError("a sweep scores every setting against the oracle: drop --no-oracle")
            sweeps.check(names, sweeps.BEAM if beam is None else beam)
        else:
            if beam is not None:
                raise unlearning.ParamError("--beam is the width of a sweep's search: use it with --sweep")
            if len(names) != 1:
                raise unlearning.ParamError("give one --method (several only with --sweep)")
            unlearning.make(names[0], parsed, preset or "paper")  # the method exists and takes these parameters
        if preset is not None and preset not in unlearning.presets.PRESETS:
            raise unlearning.ParamError(f"unknown preset {preset!r}; choose one of {', '.join(unlearning.presets.PRESETS)}")
        return names, parsed, devices.resolve(device)

    def work(ws, progress, prepared):
        names, parsed, dev = prepared
        model_rec, fs_rec = ws.get(model, "model"), ws.get(forget, "forget_set")
        if sweep:
            return sweeps.sweep(ws, model_rec, fs_rec, names, dev, progress, score=score, preset=preset,
                                beam=sweeps.BEAM if beam is None else beam)
        return runs.unlearn(ws, model_rec, fs_rec, names[0], parsed, dev, progress, with_oracle=oracle, preset=preset)

    def summary(r):
        if r["kind"] == "sweep":
            return "\n".join([f"sweep {r['id']}: {len(r['points'])} settings; best of each method:"] + [
                f"  {row['method']:<13} ToW {row['tow']:.3f} · {row['seconds']:.2f} s · run {row['run_id']}"
                for row in sweeps.summary(r)])
        m = r["metrics"]
        text = f"run {r['id']}: {r['method']} · forget acc {r['original']['acc_forget']:.3f} → {m['acc_forget']:.3f}"
        if r["oracle"] is None:
            return text + " (no oracle: ToW and speed-up not measured)"
        return (text + f" (oracle {r['oracle']['acc_forget']:.3f}) · ToW {m['tow']:.3f} · "
                f"{m['speedup']:.1f}× faster than retraining")

    execute(workspace, job, as_json, work, summary, prepare=prepare)


@app.command("evaluate")
def evaluate_(
    model: Annotated[str, typer.Argument(help="Model id.")],
    forget: Annotated[str, typer.Option("--forget", help="Forget-set id.")],
    method: Annotated[str, typer.Option(help=f"One of: none (the original model, unchanged), {', '.join(unlearning.NAMES)}.")] = "finetune",
    params: Annotated[str, typer.Option(help="Method parameters as JSON, as for unlearn.")] = "{}",
    models_: Annotated[int, typer.Option("--models", help="N: runs of the method (seeds 0…N−1) and oracles retrained on the retain set (cached per forget set).")] = evaluate_mod.MODELS,
    preset: Annotated[Optional[str], typer.Option(help="Settings for parameters not given, as for unlearn.")] = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Forgetting quality F (on a simultaneous 95% bound and on the competition's point estimate), per-sample ε and KLoM of a method, also by memorization group: N runs of it against N retrained oracles."""

    def prepare():
        parsed = json_object(params, "--params", unlearning.ParamError)
        evaluate_mod.check(method, parsed, models_, preset)
        return parsed, devices.resolve(device)

    def work(ws, progress, prepared):
        parsed, dev = prepared
        model_rec, fs_rec = ws.get(model, "model"), ws.get(forget, "forget_set")
        if not job:  # the app shows the cost on the page; the command line says it before it starts
            typer.echo(f"cost: {evaluate_mod.cost(ws, model_rec, fs_rec, method, models_, dev)['text']}", err=True)
        rec = evaluate_mod.evaluate(ws, model_rec, fs_rec, method, parsed, models_, dev, preset, progress)
        found = comparison.evaluation_groups(ws, rec)  # by the model's memorization now, so not kept in the record
        return {**rec, "by_group_score": found and found[0], "by_group": found and found[1]}

    def summary(r):
        def num(v):  # NaN and null (F where N resolves no ε; KLoM of an older record) as n/a
            return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

        lo, hi = r["forgetting_quality_interval"]
        f = (f"{num(r['forgetting_quality'])} [{num(lo)}, {num(hi)}]" if num(r["forgetting_quality"]) != "n/a"
             else f"n/a (N = {r['models']} resolves no ε at 95%)")
        lines = [f"evaluation {r['id']}: {r['method']} on {r['forget_set_id']}, N = {r['models']} · forgetting quality F "
                 f"{f} (competition's point estimate {num(r['forgetting_quality_point'])}) · score {num(r['score'])} "
                 f"(point {num(r.get('score_point'))}) · KLoM {num(r.get('klom'))} · test acc "
                 f"{r['unlearned_acc_test']:.3f} (retrained {r['retrained_acc_test']:.3f}) · {r['seconds']:.1f} s"]
        for group, g in (r.get("by_group") or {}).items():
            lines.append(f"  {group} {r['by_group_score']} ({g['size']} samples): F {num(g['forgetting_quality'])} · "
                         f"point {num(g['forgetting_quality_point'])} · KLoM {num(g['klom'])} · mean ε "
                         f"{num(g['epsilon'])} (point {num(g['epsilon_point'])})")
        return "\n".join(lines)

    execute(workspace, job, as_json, work, summary, prepare=prepare)


@app.command("memorize")
def memorize_(
    model: Annotated[str, typer.Argument(help="Model id.")],
    exact: Annotated[bool, typer.Option("--exact", help="Run the exact Feldman–Zhang estimator.")] = False,
    models_: Annotated[int, typer.Option("--models", help="How many models K to train on random subsets.")] = ExactConfig.models,
    ratio: Annotated[float, typer.Option(help="Fraction r of the training set in each subset.")] = ExactConfig.ratio,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per model (default: the model's own recipe).")] = None,
    seed: int = 0,
    engine: Annotated[str, typer.Option(help="auto (the fastest of a few timed steps of each), batched (K models as one computation, each with its own batches), fused (K models on shared batches, one wide matmul per layer) or sequential.")] = "auto",
    chunk: Annotated[Optional[int], typer.Option(help="Models per saved chunk (default: 32 batched or fused, 8 sequential).")] = None,
    backend: Annotated[str, typer.Option(help="local (this machine) or ray (chunks as tasks on a Ray cluster).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="The Ray cluster to use with --backend ray, e.g. auto or "
                                                        "ray://head:10001 (default: RAY_ADDRESS, else a local Ray).")] = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Exact memorization of every training sample; resumes where an interrupted run stopped."""
    if not exact:
        fail("say --exact to run the exact estimator (for the cheap proxies use `proxies MODEL`)")

    def prepare():
        cfg = ExactConfig(models=models_, ratio=ratio, epochs=epochs, seed=seed, engine=engine, chunk=chunk)
        cfg.check()
        memorize.check_backend(backend, address)
        if backend == "ray":
            if device != "auto":
                raise UserError("with --backend ray the cluster's devices decide (a GPU per task when it has GPUs); "
                                "leave out --device")
            return cfg, None  # memorize.exact takes the cluster's device
        return cfg, devices.resolve(device)

    def work(ws, progress, prepared):
        cfg, dev = prepared
        return memorize.exact(ws, ws.get(model, "model"), cfg, dev, progress, backend=backend, address=address)

    execute(workspace, job, as_json, work,
            lambda r: f"exact memorization {r['id']}: {r['models']} models, {r['seconds']:.1f} s on {r['device']} "
                      f"({r['params']['engine']}{', on Ray' if r.get('backend') == 'ray' else ''}); "
                      f"{r['never_held_out']} samples never held out"
                      + (f"; LiRA of the model, train vs test: AUC {r['lira_auc']:.3f}, TPR "
                         f"{r['lira_tpr_at_0.1fpr']:.3f} at 0.1% FPR" if r.get("lira_auc") is not None else ""),
            prepare=prepare)


@app.command("proxies")
def proxies_(
    model: Annotated[str, typer.Argument(help="Model id.")],
    only: Annotated[Optional[str], typer.Option(help=f"Comma-separated subset of: {', '.join(proxies.NAMES)} (curvature_avg: for a model trained with --curvature-every).")] = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Compute memorization proxies, one score set each (all that the model allows by default)."""

    def work(ws, progress, dev):
        names = [t.strip() for t in only.split(",") if t.strip()] if only else None
        records, skipped = memorize.compute_proxies(ws, ws.get(model, "model"), names, dev, progress)
        for name, why in skipped.items():
            typer.echo(f"skipped {name}: {why}", err=True)
        return {"id": records[0]["id"], "kind": "scores", "ids": [r["id"] for r in records], "scores": records,
                "skipped": skipped}

    execute(workspace, job, as_json, work,
            lambda r: "\n".join(f"{s['id']}  {s['name']:<18} {s['seconds'] * 1000:9.1f} ms on {s['device']}"
                                for s in r["scores"]),
            prepare=lambda: devices.resolve(device))


class ScoreFormat(str, Enum):
    auto = "auto"
    fz = "fz"
    cscore = "cscore"
    rum = "rum"
    runs = "runs"
    csv = "csv"


@app.command("import-scores")
def import_scores(
    file: Annotated[Path, typer.Argument(help="An npz file (Feldman & Zhang's, C-scores, RUM's, raw subset runs, an export of ours) or a CSV table (sample_id or index, label, value, stderr).")],
    model: Annotated[str, typer.Option("--model", help="The model whose training samples the scores are of (its dataset must be the file's).")],
    format_: Annotated[ScoreFormat, typer.Option("--format", help="auto (told by the file's keys), fz (tr_mem, tr_labels, infl_matrix_class{c}), cscore (scores, labels: imported as 1 − C), rum (memorization, influence), runs (trainset_mask, trainset_correctness: estimated here) or csv.")] = ScoreFormat.auto,
    name: Annotated[Optional[str], typer.Option(help="What to call the score set (default: the file's name).")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """Bring in scores computed elsewhere (published memorization, C-scores, subset-model runs) as a score set of a model: checked against its dataset's labels, mapped by original index or file name; see docs/scores.md."""

    def work(ws, progress, parsed):
        return score_files.attach(ws, ws.get(model, "model"), parsed, name, progress)

    def summary(r):
        kept = r["n"] - r["n_missing"]
        lines = [f"imported {r['id']}: {r['title']} ({r['source']['format']}) as {r['name']} scores of {r['model_id']}: "
                 f"{kept:,} of {r['n']:,} training samples, by {r['params']['aligned_by']}; {r['labels_checked']}"]
        if r.get("models"):
            lines.append(f"  estimated here from its {r['models']} runs ({r['never_held_out']} samples never held out)")
        if r.get("influence"):
            lines.append(f"  with its influence matrix ({r['influence']['layout']})")
        return "\n".join(lines) + f"  ({r['seconds']:.1f} s)"

    record = execute(workspace, job, as_json, work, summary, prepare=lambda: score_files.read(file, format_.value))
    for line in record.get("warnings") or []:
        typer.echo(f"warning: {line}", err=True)


@app.command()
def demo(
    models_: Annotated[int, typer.Option("--models", help="Subset models K for exact memorization.")] = 128,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
):
    """The whole pipeline on the embedded digits, ready to explore; a second run reuses what exists."""
    def prepare():
        ExactConfig(models=models_).check()
        return devices.resolve(device)

    def summary(r):
        tows = ", ".join(f"{m} {t:.3f}" for m, t in r["tow"].items() if t is not None)
        return (f"demo ready in {r['seconds']:.0f} s: model {r['model']}, forget sets {', '.join(r['forget_sets'])}, "
                f"{len(r['runs'])} runs (ToW {tows}). Open the app (make run) to explore it.")

    execute(workspace, job, as_json, lambda ws, progress, dev: demo_mod.run(ws, dev, progress, models_), summary,
            prepare=prepare, creates=True)


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"
    npz = "npz"


class ExportTable(str, Enum):
    values = "values"
    samples = "samples"
    lira = "lira"
    influence = "influence"


@app.command()
def export(
    record_id: Annotated[str, typer.Argument(help="A score set (per-sample values), a run (metrics) or an evaluation (per forget sample: ε of the bound and the point estimate, its score, KLoM, memorization and its group).")],
    format_: Annotated[ExportFormat, typer.Option("--format", help="csv or json; npz (with --out): an exact score set's subset runs in the raw-runs schema (trainset_mask, trainset_correctness, testset_correctness, margins) with memorization, tr_labels and tt_labels, for others to reuse (import-scores reads it back to the same estimate).")] = ExportFormat.csv,
    out: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")] = None,
    table: Annotated[ExportTable, typer.Option(help="Of an exact score set: values (one row per training sample), lira (the original model's per-sample LiRA scores against the subset models, one row per training and test sample) or influence (the test samples each training sample helps and hurts most, one row per pair); of a run: samples (the original's, the unlearned model's and the oracle's outputs, one row per training and test sample).")] = ExportTable.values,
    top: Annotated[int, typer.Option(help="With --table influence: test samples per training sample and direction.")] = 5,
    workspace: WorkspaceOpt = None,
):
    """Export a score set's per-sample values (or an exact one's LiRA scores or influence pairs), a run's metrics (or per-sample outputs), or an evaluation's per-sample ε and KLoM."""
    import csv
    import io

    if top < 1:
        fail(f"--top must be at least 1, got {top}")
    if format_ is ExportFormat.npz:
        if out is None:
            fail("--format npz writes a binary file: give --out FILE")
        if table is not ExportTable.values:
            fail("--format npz writes a score set's subset runs; leave out --table")
        arrays = query(workspace, lambda ws: score_sets.runs_arrays(ws, ws.get(record_id)))
        write_atomic(out, npz_bytes(**arrays))
        k, n = arrays["trainset_mask"].shape
        typer.echo(f"wrote {k} subset runs of {n:,} training samples ({record_id}) to {out}", err=True)
        return

    def fetch(ws):
        rec = ws.get(record_id)
        if table is ExportTable.samples:
            if rec["kind"] != "run":
                raise UserError(f"--table samples takes a run; {record_id} is a {rec['kind']}")
            return runs.sample_rows(ws, rec)
        if table is not ExportTable.values and rec["kind"] != "scores":
            raise UserError(f"--table {table.value} takes an exact score set; {record_id} is a {rec['kind']}")
        if rec["kind"] == "evaluation":
            return evaluate_mod.export_rows(ws, rec)
        if rec["kind"] == "scores":
            if table is ExportTable.lira:
                return membership.lira_rows(ws, rec)
            if table is ExportTable.influence:
                return membership.influence_rows(ws, rec, top)
            return score_sets.export_rows(ws, rec)
        if rec["kind"] == "run":
            row = {"id": rec["id"], "method": rec["method"], **rec["metrics"]}
            if format_ is ExportFormat.csv:  # a list of figures (deepobliviate's per-request ones): one JSON cell
                row = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
            return [row]
        raise UserError(f"{record_id} is a {rec['kind']}; export takes a score set, a run or an evaluation")

    rows = query(workspace, fetch)
    if format_ is ExportFormat.json:
        text = json.dumps(rows)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue().rstrip("\n")
    if out is None:
        typer.echo(text)
    else:
        write_atomic(out, (text + "\n").encode())
        typer.echo(f"wrote {len(rows)} rows to {out}", err=True)


class CompareFormat(str, Enum):
    html = "html"
    csv = "csv"
    json = "json"


@app.command()
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids (r-…).")],
    format_: Annotated[CompareFormat, typer.Option("--format", help="html (a self-contained report with every figure), csv or json.")] = CompareFormat.html,
    out: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")] = None,
    workspace: WorkspaceOpt = None,
):
    """Compare runs: their metrics with the original and the oracle as reference rows."""
    import csv
    import io

    from .present import report  # plotly and pandas: imported by the one command that draws

    def build(ws):
        for rid in run_ids:
            ws.get(rid, "run")  # every id is a run, or exit 2 before anything is written
        if format_ is CompareFormat.html:
            return report.html(ws, run_ids)
        rows = _finite(comparison.rows(ws, [ws.get(rid, "run") for rid in run_ids]))
        if format_ is CompareFormat.json:
            return json.dumps(rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")

    text = query(workspace, build)
    if out is None:
        typer.echo(text)
    else:
        write_atomic(out, (text + "\n").encode())
        typer.echo(f"wrote {out} ({len(run_ids)} runs)", err=True)


COLUMNS = {
    "models": ["id", "name", "source", "arch", "dataset", "epochs", "train_acc", "flipped_fit", "test_acc"],
    "scores": ["id", "model_id", "name", "seconds", "device", "title"],
    "forget-sets": ["id", "name", "model_id", "made", "size", "classes", "mean_memorization", "es"],
    "maps": ["id", "model_id", "method", "seed", "seconds"],
    "sweeps": ["id", "name", "model_id", "forget_set_id", "device"],
    "runs": ["id", "method", "model_id", "forget_set_id"],
    "evaluations": ["id", "method", "model_id", "forget_set_id", "models", "forgetting_quality", "score", "seconds"],
    "jobs": queue_cli.JOB_COLUMNS,
}


@app.command("list")
def list_(
    what: Annotated[Listable, typer.Argument(help="What to list.")] = Listable.models,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """List the records of one kind."""
    rows = query(workspace, lambda ws: jobs.list_jobs(ws) if what.value == "jobs" else ws.find(LIST_KINDS[what.value]))
    if what is Listable.forget_sets:
        rows = [{**r, "made": forget_sets.describe(r)} for r in rows]
    emit(rows, as_json, _table(rows, COLUMNS[what.value]) if rows else f"no {what.value} yet")


@app.command()
def show(
    record_id: Annotated[str, typer.Argument(help="Any record id (m-…, fs-…, r-…, j-…).")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """Show one record with its metrics."""
    rec = query(workspace, lambda ws: jobs.get(ws, record_id) if record_id.startswith("j-") else ws.get(record_id))
    bulky = {"ids", "flipped", "log", "files", "forget_ids", "epsilons", "epsilons_point", "kloms"}
    text = "\n".join(f"{k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}"
                     for k, v in rec.items() if k not in bulky)
    emit(rec, as_json, text)


# The job queue's commands live in queue_cli, which `python -m explorer` serves without this module's
# imports (PyTorch); registered here too, so this CLI's --help and its in-process callers have them.
app.command("jobs")(queue_cli.jobs_)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(queue_cli.submit)
app.command()(queue_cli.cancel)


def main() -> None:
    queue_cli.serve(app)

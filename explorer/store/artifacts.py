"""Every artifact file a record keeps, by name, and how each is read back.

A record lists its files in `files`; these loaders are the only code that opens them, and the
names below the only place they are spelled. Nothing here computes or publishes: explorer.pipeline
writes records (through `Workspace.put`), explorer.present and the app read them through here.

Weights are read only through safetensors, so a stored model file can never run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .. import data as data_mod
from .. import models
from ..errors import UserError, first_line
from ..evaluation.embeddings import SampleMap
from ..memorization import scores
from ..memorization.scores import SCORES, ScoreSet
from ..training.recipe import Recipe
from .block_file import BlockFile
from .influence_file import InfluenceFile
from .workspace import Workspace

# A model record's files.
WEIGHTS = "weights.safetensors"  # its weights (a run's: the unlearned weights)
INIT = "init.safetensors"  # the initial weights of a model trained here
DYNAMICS = "dynamics.npz"  # per-sample training dynamics, samples × epochs (explorer.training.DYNAMICS)
CODES = "codes.safetensors"  # mnemonic codes, one input per class, under "codes"
BLOCKS = "blocks.safetensors"  # M_0 … M_B of a model trained in blocks (block_file.py)
STATES = {"weights": WEIGHTS, "init": INIT}  # the state dicts `load_model` can load
# Other records' files.
VALUES = "values.npz"  # a score set: its `values` and any extra arrays (stderr, masks, …)
INFLUENCE = "influence.npy"  # an imported score set's influence matrix, dense (influence_file.py)
INFLUENCE_BLOCKS = "influence-blocks.npz"  # the same, kept as the file's within-class blocks
MAP = "map.npz"  # a sample map: xy, features, pred
SAMPLES = "samples.npz"  # a run: per-sample outputs of the original, the unlearned model and the oracle
EVALUATION_SAMPLES = "samples"  # an evaluation: per forget sample, both sides' φ and its ε (explorer.pipeline.evaluate)


def has(rec: dict, name: str) -> bool:
    return name in rec.get("files", [])


# -- models and their datasets ------------------------------------------------------------------


def spec_of(rec: dict) -> data_mod.DatasetSpec:
    """The dataset spec a dataset record describes (an image folder's keeps the side its images
    were loaded at: records.read gives an older record the 32×32 they were resized to then)."""
    fields = data_mod.DatasetSpec.__dataclass_fields__
    return data_mod.DatasetSpec(**{k: rec[k] for k in fields if k in rec})


def dataset_of(ws: Workspace, model_rec: dict) -> data_mod.Dataset:
    return data_mod.load(spec_of(ws.get(model_rec["dataset_id"], "dataset")))


def recipe_of(model_rec: dict) -> Recipe | None:
    """The recipe the model was trained with; None for a model trained elsewhere (imported)."""
    meta = model_rec["recipe"]
    return Recipe.from_meta(meta) if meta else None


class ArtifactError(UserError):
    """An artifact file that is there but cannot be read (truncated, overwritten): one line naming
    it, so the rest of the workspace stays usable."""


def _unreadable(ws: Workspace, rec: dict, name: str, err: Exception) -> ArtifactError:
    path = ws.artifact(rec["kind"], rec["id"], name)
    return ArtifactError(f"{path} ({name} of {rec['id']}) cannot be read: {first_line(err, named=True)}; the file "
                         "is damaged: make that record again")


def _tensors(ws: Workspace, rec: dict, name: str) -> dict[str, torch.Tensor]:
    """A safetensors artifact's tensors."""
    path = ws.read(rec, name)
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - any decoder error of a damaged file
        raise _unreadable(ws, rec, name, err) from None


def _arrays(ws: Workspace, rec: dict, name: str) -> dict[str, np.ndarray]:
    """An npz artifact's arrays, all read now (a damaged member fails here, not later)."""
    path = ws.read(rec, name)
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any decoder error of a damaged file
        raise _unreadable(ws, rec, name, err) from None


def load_model(ws: Workspace, rec: dict, which: str = "weights", device: torch.device | str = "cpu") -> nn.Module:
    """The model record's architecture with its weights (or, `which="init"`, its initial weights)."""
    ds_rec = ws.get(rec["dataset_id"], "dataset")
    channels, size, _ = ds_rec["shape"]
    model = models.build(models.arch_of(rec), channels, len(ds_rec["classes"]), size)
    model.load_state_dict(_tensors(ws, rec, STATES[which]))
    return model.to(device)


def load_init(ws: Workspace, model_rec: dict) -> dict[str, torch.Tensor] | None:
    """θ_0, the state dict the model's training started from, on the CPU; None for a model
    trained elsewhere."""
    return _tensors(ws, model_rec, INIT) if has(model_rec, INIT) else None


def load_codes(ws: Workspace, model_rec: dict) -> torch.Tensor | None:
    """The model's mnemonic codes, (num_classes, C, H, W) on the CPU, or None if it was trained
    without them (or imported)."""
    if not has(model_rec, CODES):
        return None
    return _tensors(ws, model_rec, CODES)["codes"]


def load_dynamics(ws: Workspace, model_rec: dict) -> dict[str, np.ndarray]:
    """The samples × epochs arrays recorded while the model trained."""
    if not model_rec["has_dynamics"]:
        raise UserError(f"model {model_rec['id']} has no training dynamics (it was {model_rec['source']})")
    return _arrays(ws, model_rec, DYNAMICS)


def open_blocks(ws: Workspace, model_rec: dict) -> BlockFile | None:
    """The model's stored blocks, read lazily; None for a model trained in one piece."""
    return BlockFile(ws.read(model_rec, BLOCKS)) if has(model_rec, BLOCKS) else None


# -- score sets and maps ------------------------------------------------------------------------


def load_scores(ws: Workspace, rec: dict | str) -> ScoreSet:
    """A score set, by record or id."""
    rec = ws.get(rec, "scores") if isinstance(rec, str) else rec
    arrays = _arrays(ws, rec, VALUES)
    return ScoreSet(rec, arrays.pop("values"), arrays)


def latest_scores(ws: Workspace, model_id: str) -> dict[str, dict]:
    """The newest score set of each name for a model, in the order of SCORES."""
    newest = {rec["name"]: rec for rec in ws.find("scores", model_id=model_id)}  # find is oldest first
    return {name: newest[name] for name in SCORES if name in newest}


def memorization_of(ws: Workspace, model_rec: dict) -> tuple[str, np.ndarray] | None:
    """(name, values oriented so that higher = more memorized) of the model's newest exact
    memorization, else of its newest score set of any name; None without one. What ε is set
    against (the RUM paper's point: memorized samples are the hard ones to forget)."""
    newest = latest_scores(ws, model_rec["id"])
    if not newest:
        return None
    name = "exact" if "exact" in newest else next(iter(newest))
    return name, scores.oriented(name, load_scores(ws, newest[name]).values)


def open_influence(ws: Workspace, rec: dict) -> InfluenceFile | None:
    """The influence matrix a score set was imported with, read lazily; None without one (an
    exact set computed here has its subset models instead: explorer.evaluation.influence)."""
    if has(rec, INFLUENCE):
        return InfluenceFile(dense=ws.read(rec, INFLUENCE))
    if has(rec, INFLUENCE_BLOCKS):
        return InfluenceFile(blocks=ws.read(rec, INFLUENCE_BLOCKS))
    return None


def find_maps(ws: Workspace, model_id: str, method: str | None = None, seed: int | None = None) -> list[dict]:
    """Stored maps of a model, newest first."""
    where = {k: v for k, v in (("method", method), ("seed", seed)) if v is not None}
    return ws.find("embedding", model_id=model_id, **where)[::-1]


def load_map(ws: Workspace, rec: dict) -> SampleMap:
    f = _arrays(ws, rec, MAP)
    return SampleMap(rec, f["xy"], f["features"], f["pred"])


# -- runs ---------------------------------------------------------------------------------------


def run_samples(ws: Workspace, run: dict) -> dict[str, np.ndarray] | None:
    """Per-sample confidence / loss / prediction of the original, unlearned and oracle models
    (`original_train_loss`, `unlearned_test_pred`, …); None for runs made before they were kept."""
    if not has(run, SAMPLES):
        return None
    return _arrays(ws, run, SAMPLES)


def evaluation_samples(ws: Workspace, rec: dict) -> dict[str, np.ndarray]:
    """An evaluation's arrays, in `forget_ids` order: `unlearned_phi` and `retrained_phi` (models ×
    forget samples: the margins KLoM reads), `epsilons` (the bound), `epsilons_point`, `points`, and
    `klom` in evaluations made since KLoM was added."""
    return _arrays(ws, rec, EVALUATION_SAMPLES)


def unlearned_model(ws: Workspace, run: dict) -> nn.Module:
    """The run's unlearned model (the original's architecture with the run's weights)."""
    model = load_model(ws, ws.get(run["model_id"], "model"))
    model.load_state_dict(_tensors(ws, run, WEIGHTS))
    return model


# -- partial results: the chunks of a run still under way -----------------------------------------

PARTIAL = "partial"  # the workspace's folder of runs under way, one folder each
CHUNKS = "chunk-*.npz"  # a run's saved chunks, chunk-00000.npz, …


def exact_folder(ws: Workspace, model_id: str, key: str) -> Path:
    """The folder of an exact-memorization run under way, by the key of its configuration."""
    return ws.path / PARTIAL / f"exact-{model_id}-{key}"


def exact_folders(ws: Workspace, model_id: str) -> list[Path]:
    """Every exact-memorization run of the model still under way (its folder), oldest name first."""
    return sorted((ws.path / PARTIAL).glob(f"exact-{model_id}-*"))


def chunk_count(folder: Path) -> int:
    return len(list(folder.glob(CHUNKS)))

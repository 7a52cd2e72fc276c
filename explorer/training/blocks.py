"""Block training for DeepObliviate (He et al. 2021), as understood, and the steps its unlearning
retraces (explorer/unlearning/deepobliviate.py).

With `Recipe.blocks` = B ≥ 2 the training set is split into B class-stratified blocks (seeded);
the model is trained block by block in one pass, `recipe.epochs` epochs on each block and no
return to earlier blocks, with one optimizer whose momentum carries over from block to block.
After each block the weights and the momentum are kept: M_0 (the initial model) … M_B, which the
model record stores as one file (explorer/store/block_file.py).

Block k is trained by the one-piece loop (loop.py) with the recipe's seed + k, so retraining a
block (without some points) shuffles it the same way; per-sample dynamics are not recorded (a
1/B-sized block per epoch would leave holes in the samples × epochs table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ..errors import RecipeError
from ..runtime import optim
from ..runtime.progress import Progress, no_progress
from .loop import TrainResult, accuracy, run
from .recipe import Recipe


def stratified_blocks(y, blocks: int, seed: int) -> list[np.ndarray]:
    """`blocks` disjoint sets of positions covering y, each class spread evenly over them (sizes
    differ by at most one); the same seed always gives the same blocks. Each block is sorted."""
    y = np.asarray(y)
    if not 2 <= blocks <= len(y):
        raise RecipeError(f"blocks must be between 2 and the {len(y)} training samples, got {blocks}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    return [np.sort(order[k::blocks]) for k in range(blocks)]


def block_recipe(recipe: Recipe, k: int) -> Recipe:
    """The recipe block k (1-based) is trained with: plain (no blocks), its own shuffling seed and,
    with `cosine`, a learning rate that follows a cosine over the blocks (constant within one)."""
    lr = optim.cosine_lr(recipe.lr, k - 1, recipe.blocks) if recipe.cosine else recipe.lr
    return replace(recipe, blocks=0, seed=recipe.seed + k, cosine=False, lr=lr)


def param_names(model: nn.Module) -> list[str]:
    """Names of the parameters the optimizer updates, in its order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def new_optimizer(model: nn.Module, recipe: Recipe) -> optim.SGD:
    return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def snapshot(model: nn.Module, opt: optim.SGD) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies on the CPU of the model's state and the optimizer's momentum (zeros before a step)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    momentum = {n: (b.detach().cpu().clone() if b is not None else torch.zeros_like(p.detach().cpu()))
                for n, p, b in zip(param_names(model), opt.params, opt.buffers)}
    return state, momentum


def restore(model: nn.Module, opt: optim.SGD, state: dict, momentum: dict | None, device: torch.device) -> None:
    """Put the model and the optimizer back at a stored point; momentum None (M_0) means the
    optimizer has not stepped yet, so its first step seeds the buffers as in training."""
    model.load_state_dict(state)
    model.to(device)
    opt.buffers = ([None] * len(opt.params) if momentum is None else
                   [momentum[n].to(device).clone() for n in param_names(model)])


def train_block(model: nn.Module, opt: optim.SGD, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray,
                recipe: Recipe, k: int, device: torch.device, drop=None, **kwargs) -> TrainResult:
    """Train block k (its positions `ids` in x, y) in place, continuing `opt`; an empty block is
    a no-op. `drop`: positions in x, y replayed out of the block's run (loop.py)."""
    if len(ids) == 0:
        return TrainResult()
    index = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    local = None if drop is None else np.flatnonzero(np.isin(ids, np.asarray(drop, dtype=np.int64)))
    return run(model, x[index], y[index], block_recipe(recipe, k), device, record_dynamics=False, opt=opt,
               drop=local, **kwargs)


@dataclass
class BlockResult(TrainResult):
    block_ids: list[np.ndarray] = field(default_factory=list)  # positions of each block, 1 … B
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # M_0 … M_B
    momenta: list[dict[str, torch.Tensor]] = field(default_factory=list)  # v_0 … v_B


def fit_blocks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, device: torch.device,
               *, x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
               progress: Progress = no_progress, snapshots: bool = True, drop=None) -> BlockResult:
    """Train `model` in place block by block (module docstring); returns the log (one row per
    block: its last epoch's loss and accuracy, then the test accuracy, at epoch k·E) and, with
    `snapshots`, M_0 … M_B with their momenta. `drop`: positions in x, y replayed out of the run
    (loop.py): the blocks are the original's, each trained without them."""
    start = time.perf_counter()
    B = recipe.blocks
    result = BlockResult(block_ids=stratified_blocks(y.cpu().numpy(), B, recipe.seed))
    model.to(device)
    opt = new_optimizer(model, recipe)
    def keep_snapshot():
        if snapshots:
            for part, kept in zip(snapshot(model, opt), (result.states, result.momenta)):
                kept.append(part)

    keep_snapshot()
    for k, ids in enumerate(result.block_ids, start=1):
        sub = train_block(model, opt, x, y, ids, recipe, k, device, drop=drop,
                          progress=lambda f, msg, k=k: progress((k - 1 + f) / B, f"block {k}/{B} · {msg}"))
        row = {**sub.log[-1], "epoch": k * recipe.epochs, "block": k}  # one row per block: its last epoch
        if x_test is not None:  # after the block, not after each of its (many, small) epochs
            row["test_acc"] = accuracy(model, x_test, y_test)
        result.log.append(row)
        if sub.codes is not None:
            result.codes = sub.codes
        keep_snapshot()
    result.seconds = time.perf_counter() - start
    return result

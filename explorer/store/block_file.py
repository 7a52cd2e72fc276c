"""A model's stored blocks (DeepObliviate; explorer/training/blocks.py) as one safetensors file:
`m<k>.<key>` (M_k's state dict), `v<k>.<param>` (the optimizer's momentum after block k; zeros for
M_0, whose optimizer has not stepped yet) and `ids<k>` (the sample ids of block k, k ≥ 1), k = 0 … B.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ..training.blocks import BlockResult


def pack(result: BlockResult) -> bytes:
    """The stored blocks file: M_0 … M_B, their momenta and each block's sample ids."""
    tensors = {}
    for k, (state, momentum) in enumerate(zip(result.states, result.momenta)):
        tensors.update({f"m{k}.{n}": v.contiguous() for n, v in state.items()})
        tensors.update({f"v{k}.{n}": v.contiguous() for n, v in momentum.items()})
    for k, ids in enumerate(result.block_ids, start=1):
        tensors[f"ids{k}"] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    return st_save(tensors)


class BlockFile:
    """A model's stored blocks, read lazily: only the states an unlearning run needs are loaded."""

    def __init__(self, path: Path):
        self.path = str(path)
        self._file = safe_open(self.path, "pt")  # memory-mapped; parsing its header once saves ~1 ms a read
        keys = list(self._file.keys())
        self.ids = [self._file.get_tensor(f"ids{k}").numpy()
                    for k in range(1, 1 + sum(k.startswith("ids") for k in keys))]
        self.blocks = len(self.ids)
        self._keys = {p: [k.split(".", 1)[1] for k in keys if k.startswith(f"{p}0.")] for p in ("m", "v")}

    def _read(self, prefix: str, k: int) -> dict[str, torch.Tensor]:
        if not 0 <= k <= self.blocks:
            raise IndexError(f"no stored block {k}; there are {self.blocks}")
        return {n: self._file.get_tensor(f"{prefix}{k}.{n}") for n in self._keys[prefix]}

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """M_k's state dict, on the CPU."""
        return self._read("m", k)

    def momentum(self, k: int) -> dict[str, torch.Tensor]:
        """The optimizer's momentum after block k, by parameter name."""
        return self._read("v", k)

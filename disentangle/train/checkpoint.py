"""The optimiser's state as checkpoint tensors and JSON (the file format itself is
:mod:`disentangle.runs.checkpoint`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into named tensors and JSON-serialisable rest."""
    state = opt.state_dict()
    tensors, plain = {}, {}
    for pid, s in state["state"].items():
        plain[str(pid)] = {}
        for k, v in s.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                plain[str(pid)][k] = v
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

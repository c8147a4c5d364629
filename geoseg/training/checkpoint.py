"""Resumable checkpoints: weights and optimiser state as safetensors, counters as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._atomic import atomic_path
from geoseg.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


def checkpoint_paths(output: Path) -> tuple[Path, Path]:
    """Return the resumable checkpoint (weights + optimiser, safetensors) and its JSON state."""
    return (output.with_name(output.name + ".last.safetensors"),
            output.with_name(output.name + ".state.json"))


def _save_checkpoint(output: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    ckpt, state_path = checkpoint_paths(output)
    tensors: dict[str, Any] = {f"model.{k}": v.detach().cpu().contiguous()
                               for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous() \
                if hasattr(value, "detach") else __import__("torch").tensor(value)
    state = {**state, "param_groups": opt["param_groups"]}
    with atomic_path(ckpt, overwrite=True) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(state_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(state, indent=1))


def _load_checkpoint(output: Path, model: nn.Module, optimizer: torch.optim.Optimizer
                     ) -> dict[str, Any]:
    from safetensors.torch import load_file

    ckpt, state_path = checkpoint_paths(output)
    if not ckpt.is_file() or not state_path.is_file():
        raise InputError(f"cannot resume: no checkpoint for {output} (expected {ckpt} and "
                         f"{state_path}); start without --resume")
    tensors = load_file(str(ckpt))
    state: dict[str, Any] = json.loads(state_path.read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return state

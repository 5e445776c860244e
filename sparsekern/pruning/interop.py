"""torch.nn.utils.prune interop: the `<name>_orig` parameter / `<name>_mask` buffer reparametrisation.

sparsekern writes its masks as that reparametrisation (so `module.weight` is `weight_orig * weight_mask`,
recomputed before every forward, and the gradient reaching `weight_orig` is masked by the chain rule), reads
masks that torch.nn.utils.prune wrote, combines new masks with existing ones (logical and: masks only shrink),
and `remove` bakes the masks into plain parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune


def is_reparametrized(module: nn.Module, name: str = "weight") -> bool:
    return f"{name}_orig" in module._parameters and f"{name}_mask" in module._buffers


def trainable_name(module: nn.Module, name: str = "weight") -> str:
    """The name of the parameter the optimiser updates: `<name>_orig` under a reparametrisation, else `<name>`."""
    return f"{name}_orig" if is_reparametrized(module, name) else name


def trainable_param(module: nn.Module, name: str = "weight") -> nn.Parameter:
    return module._parameters[trainable_name(module, name)]


def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the module computes with (orig * mask under a reparametrisation), detached. Recomputed here
    rather than read from `module.<name>`, which is only refreshed at the next forward."""
    if is_reparametrized(module, name):
        return (module._parameters[f"{name}_orig"] * module._buffers[f"{name}_mask"]).detach()
    return getattr(module, name).detach()


def existing_mask(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The reparametrisation's mask as bool, or None when the parameter is not reparametrised."""
    return module._buffers[f"{name}_mask"] != 0 if is_reparametrized(module, name) else None


def read_masks(model: nn.Module, name: str = "weight") -> dict[str, torch.Tensor]:
    """{module name: bool mask} for every module whose `name` parameter carries a pruning reparametrisation."""
    return {n: existing_mask(mod, name) for n, mod in model.named_modules() if is_reparametrized(mod, name)}


def write_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Writes `mask` (True = keep) as the reparametrisation of `module.<name>`, and-ed with an existing mask."""
    param = getattr(module, f"{name}_orig", None) if is_reparametrized(module, name) else getattr(module, name)
    if tuple(mask.shape) != tuple(param.shape):
        raise ValueError(
            f"sparsekern.pruning.write_masks: mask shape {tuple(mask.shape)} != {name} shape {tuple(param.shape)}"
        )
    mask = mask.to(device=param.device, dtype=torch.bool)
    if is_reparametrized(module, name):
        buf = module._buffers[f"{name}_mask"]
        buf.copy_((buf != 0) & mask)
        # torch refreshes `module.<name>` only in its forward pre-hook; keep the attribute consistent now.
        setattr(module, name, module._parameters[f"{name}_orig"] * buf)
    else:
        torch_prune.custom_from_mask(module, name, mask.to(param.dtype))


def write_masks(model: nn.Module, masks: dict[str, torch.Tensor], name: str = "weight") -> nn.Module:
    """Writes {module name: mask} into `model` as torch.nn.utils.prune reparametrisations (see write_mask)."""
    where = "sparsekern.pruning.write_masks"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(masks, dict):
        raise TypeError(f"{where}: masks must be a dict {{module name: mask}}, got {type(masks).__name__}")
    modules = dict(model.named_modules())
    for layer, mask in masks.items():
        if layer not in modules:
            raise KeyError(f"{where}: no module named {layer!r}")
        mod = modules[layer]
        if not is_reparametrized(mod, name) and not isinstance(mod._parameters.get(name), nn.Parameter):
            raise ValueError(f"{where}: module {layer!r} ({type(mod).__name__}) has no parameter {name!r} to mask")
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{where}: the mask of {layer!r} must be a torch.Tensor, got {type(mask).__name__}")
        write_mask(mod, mask, name)
    return model


def remove(model: nn.Module) -> nn.Module:
    """Bakes every pruning reparametrisation in `model` into its parameter (torch.nn.utils.prune.remove): the
    parameter becomes orig * mask, keeping its identity, so an optimiser holding `<name>_orig` keeps working."""
    for module in model.modules():
        hooks = module._forward_pre_hooks.values()
        for name in [h._tensor_name for h in hooks if isinstance(h, torch_prune.BasePruningMethod)]:
            torch_prune.remove(module, name)
    return model

"""Channel dependencies of a model, read from a torch.fx trace.

A *channel group* is a set of tensors whose channels must be removed together: the outputs of the layers that
produce them (Linear / Conv), the BatchNorms and channel-wise ops they flow through, the residual adds that tie
several producers together, and the layers that consume them (whose input channels shrink). A group is *pinned*
(its channels cannot be removed) when a tensor of it reaches anything else: the model output, a concatenation, a
reshape other than a flatten into a Linear, a grouped convolution, a module called twice, and so on.

Used by shrink_ (which channels can be removed, and where they go), by the bn_scale criterion and by channel
pruning (which BatchNorm a layer's output channels feed).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .interop import effective_weight
from .layers import is_prunable

POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardtanh, nn.ELU,
    nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip
POINTWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
    F.hardswish, F.hardtanh, F.elu, F.mish, F.dropout,
}  # fmt: skip
POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
SCALE_FUNCTIONS = {operator.mul, operator.truediv}




@dataclass
class Group:
    kind: str  # "conv": channels on dim 1 of a feature map; "linear": channels on the last dim
    producers: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)  # BatchNorms sliced along with the channels
    consumers: list[tuple[str, bool]] = field(default_factory=list)  # (layer, fed through a flatten)
    pinned: list[str] = field(default_factory=list)  # why the channels cannot be removed


class ChannelGraph:
    """The channel groups of `model` (see the module docstring). Raises ValueError when fx cannot trace it."""

    def __init__(self, model: nn.Module):
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # fx raises many types (TraceError, TypeError on data-dependent control flow...)
            raise ValueError(f"the model is not torch.fx-traceable ({type(e).__name__}: {e})") from e
        self.modules = dict(model.named_modules())
        self._parent: dict[int, int] = {}
        self._groups: dict[int, Group] = {}
        self.state: dict[fx.Node, tuple[int, bool]] = {}  # node -> (group id, flattened)
        self.bn_of: dict[str, str] = {}  # layer -> the BatchNorm its output channels feed directly
        self._analyse()

    # union-find over group ids

    def _new(self, kind: str, producer: str) -> int:
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = Group(kind, producers=[producer])
        return gid

    def _find(self, gid: int) -> int:
        while self._parent[gid] != gid:
            gid = self._parent[gid]
        return gid

    def group(self, gid: int) -> Group:
        return self._groups[self._find(gid)]

    def _union(self, a: int, b: int) -> int:
        a, b = self._find(a), self._find(b)
        if a != b:
            ga, gb = self._groups[a], self._groups.pop(b)
            ga.producers += gb.producers
            ga.followers += gb.followers
            ga.consumers += gb.consumers
            ga.pinned += gb.pinned
            self._parent[b] = a
        return a

    def groups(self) -> list[Group]:
        return [self._groups[g] for g in self._parent if self._find(g) == g]

    def group_of(self, layer: str) -> Group:
        return next(g for g in self.groups() if layer in g.producers)

    # classification

    def kind_of(self, node: fx.Node) -> str:
        if node.op == "call_module":
            mod = self.modules[node.target]
            if is_prunable(mod):
                return "producer"
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                return "bn"
            if isinstance(mod, POINTWISE_MODULES):
                return "pointwise"
            if isinstance(mod, POOL_MODULES):
                return "pool"
            if isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1:
                return "flatten"
            return "other"
        extra_nodes = [a for a in node.all_input_nodes if a is not (node.args[0] if node.args else None)]
        if node.op == "call_function":
            if node.target in ADD_FUNCTIONS and len(node.args) == 2 and not node.kwargs:
                return "add" if all(isinstance(a, fx.Node) for a in node.args) else "other"
            if node.target in SCALE_FUNCTIONS and isinstance(node.args[1], (int, float)):
                return "scale"
            if extra_nodes:
                return "other"
            if node.target in POINTWISE_FUNCTIONS:
                return "pointwise"
            if node.target in POOL_FUNCTIONS:
                return "pool"
            if node.target is torch.flatten and tuple(node.args[1:]) in ((1,), (1, -1)) and not node.kwargs:
                return "flatten"
            if node.target is getattr and node.args[1] == "shape":
                return "shape"
        if node.op == "call_method":
            if node.target in ("size", "dim"):
                return "shape"
            if node.target == "add" and len(node.args) == 2 and isinstance(node.args[1], fx.Node):
                return "add"
            if node.target == "flatten" and tuple(node.args[1:]) in ((1,), (1, -1)) and not node.kwargs:
                return "flatten"
            if node.target in ("view", "reshape") and self._is_batch_flatten(node):
                return "flatten"
            if node.target in POINTWISE_METHODS and not extra_nodes and len(node.args) == 1:
                return "pointwise"
        return "other"

    def _is_batch_flatten(self, node: fx.Node) -> bool:
        """x.view(y.size(0), -1) / x.reshape(y.size(0), -1), y being x or a tensor of x's channel group (so of
        x's batch size: channel-wise ops keep dim 0)."""
        if len(node.args) != 3 or node.args[2] != -1 or node.kwargs:
            return False
        size, x = node.args[1], node.args[0]
        if not (isinstance(size, fx.Node) and size.op == "call_method" and size.target == "size"):
            return False
        y = size.args[0]
        same = y is x or (
            y in self.state and x in self.state and self._find(self.state[y][0]) == self._find(self.state[x][0])
        )
        return size.args[1:] == (0,) and same

    # analysis

    def _pin(self, node: fx.Node, reason: str) -> None:
        if node in self.state:
            self.group(self.state[node][0]).pinned.append(reason)

    def _analyse(self) -> None:
        calls: dict[str, int] = {}
        src: dict[fx.Node, str] = {}  # node -> the single layer it comes from through channel-wise ops only
        for node in self.gm.graph.nodes:
            kind = self.kind_of(node)
            x = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            xs = self.state.get(x) if x is not None else None
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
            if kind == "producer":
                self._producer(node, x, xs)
                src[node] = node.target
            elif kind == "bn" and xs is not None:
                gid, flat = xs
                mod = self.modules[node.target]
                if flat or not (self.group(gid).kind == "conv" or isinstance(mod, nn.BatchNorm1d)):
                    self._pin(x, f"feeds {type(mod).__name__} {node.target} on a non-channel dim")
                else:
                    self.group(gid).followers.append(node.target)
                    if x in src and src[x] not in self.bn_of:
                        self.bn_of[src[x]] = node.target
                    src[node] = src.get(x)
                self.state[node] = xs
            elif kind in ("pointwise", "scale", "pool") and xs is not None:
                if kind == "pool" and (xs[1] or self.group(xs[0]).kind != "conv"):
                    self._pin(x, f"feeds pooling {node.target} on a non-spatial dim")
                self.state[node] = xs
                if x in src:
                    src[node] = src[x]
            elif kind == "flatten" and xs is not None:
                if xs[1] or self.group(xs[0]).kind != "conv":
                    self._pin(x, "is flattened twice or flattened on its channel dim")
                self.state[node] = (xs[0], True)
            elif kind == "add":
                a, b = (self.state.get(n) for n in node.args)
                if a is not None and b is not None and a[1] == b[1] and self.group(a[0]).kind == self.group(b[0]).kind:
                    self.state[node] = (self._union(a[0], b[0]), a[1])
                else:
                    for n in node.args:
                        self._pin(n, f"is added (by {node.name}) to a tensor that is not a compatible layer output")
            elif kind != "shape":
                target = getattr(node.target, "__name__", node.target)
                what = "is a model output" if node.op == "output" else f"feeds {node.op} {target}"
                for n in node.all_input_nodes:
                    self._pin(n, what)
        for name, count in calls.items():
            if count > 1:
                for g in self.groups():
                    if name in g.producers or name in g.followers or any(c == name for c, _ in g.consumers):
                        g.pinned.append(f"{name} is called {count} times")

    def _producer(self, node: fx.Node, x: fx.Node | None, xs) -> None:
        name = node.target
        mod = self.modules[name]
        is_conv = not isinstance(mod, nn.Linear)
        if xs is not None:
            gid, flat = xs
            in_kind = self.group(gid).kind
            if is_conv and (in_kind != "conv" or flat or mod.groups != 1):
                self._pin(x, f"feeds {type(mod).__name__} {name}, whose input channels cannot be sliced")
            elif not is_conv and in_kind == "conv" and not flat:
                self._pin(x, f"feeds Linear {name} without a flatten")
            else:
                self.group(gid).consumers.append((name, flat))
        gid = self._new("conv" if is_conv else "linear", name)
        if is_conv and mod.groups != 1:
            self._groups[gid].pinned.append(f"{name} is a grouped convolution")
        self.state[node] = (gid, False)

    # constants of dead channels

    def constants_at_consumers(self, C: dict[str, int]) -> dict[str, torch.Tensor]:
        """For each consumer layer, the value (float64, one per channel of its input group) that a channel whose
        producers' weight rows are all zero takes at that input: the producers' bias pushed through the
        BatchNorms (eval mode) and channel-wise ops on the way. NaN where the value is not spatially constant
        (a zero-padded average pool of a nonzero constant). `C` maps each producer to its channel count."""
        vals: dict[fx.Node, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for node in self.gm.graph.nodes:
                kind = self.kind_of(node)
                x = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
                if kind == "producer":
                    if x in vals:
                        out[node.target] = vals[x]
                    mod = self.modules[node.target]
                    vals[node] = (
                        torch.zeros(C[node.target], dtype=torch.float64)
                        if mod.bias is None
                        else effective_weight(mod, "bias").double().cpu()
                    )
                elif x in vals and kind in ("bn", "pointwise", "scale", "pool", "flatten"):
                    vals[node] = self._constant_through(node, kind, vals[x])
                elif kind == "add" and all(a in vals for a in node.args):
                    vals[node] = vals[node.args[0]] + vals[node.args[1]]
        return out

    def _constant_through(self, node: fx.Node, kind: str, v: torch.Tensor) -> torch.Tensor:
        mod = self.modules.get(node.target) if node.op == "call_module" else None
        if kind == "bn":
            if mod.running_mean is not None:
                v = (v - mod.running_mean.double().cpu()) / (mod.running_var.double().cpu() + mod.eps).sqrt()
            else:
                v = torch.zeros_like(v)  # batch statistics of a constant channel: x - mean = 0
            if mod.affine:
                v = v * effective_weight(mod, "weight").double().cpu() + effective_weight(mod, "bias").double().cpu()
            return v
        if kind == "flatten" or isinstance(mod, (nn.Dropout, nn.Dropout2d)) or node.target is F.dropout:
            return v
        if kind == "pool":
            zero_padded_avg = (
                isinstance(mod, nn.AvgPool2d) and mod.count_include_pad and mod.padding not in (0, (0, 0))
            ) or (node.target is F.avg_pool2d)
            return torch.where(v == 0, v, float("nan")) if zero_padded_avg else v
        if mod is not None:
            return mod(v.view(1, -1)).view(-1)  # parameter-free activations (POINTWISE_MODULES)
        if node.op == "call_method":
            return getattr(v, node.target)(*node.args[1:])
        return node.target(v, *node.args[1:], **node.kwargs)


def bn_after(model: nn.Module, layers: list[str], bn_map: dict[str, str] | None = None) -> dict[str, str]:
    """{layer: name of the BatchNorm its output channels feed}: `bn_map` where given, else read from the fx graph
    (the first BatchNorm reached through channel-wise ops only), else, for models fx cannot trace, the next
    module in registration order when it is a BatchNorm of matching width. Layers without one are left out."""
    found = dict(bn_map or {})
    todo = [n for n in layers if n not in found]
    if not todo:
        return found
    try:
        direct = ChannelGraph(model).bn_of
    except ValueError:
        names = [
            n for n, m in model.named_modules() if is_prunable(m) or isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        mods = dict(model.named_modules())
        direct = {}
        for a, b in zip(names, names[1:]):
            if isinstance(mods[b], nn.modules.batchnorm._BatchNorm) and mods[b].num_features == mods[a].weight.shape[0]:
                direct[a] = b
    found.update({n: direct[n] for n in todo if n in direct})
    return found

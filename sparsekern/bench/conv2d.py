"""Sparse vs dense convolution on the CPU: ResNet-50 end to end, per layer, and representative conv shapes.

`resnet50_speedup()` builds ResNet-50 (Hugging Face transformers' ResNetForImageClassification(ResNetConfig()) when
transformers is installed, else the same architecture from torch modules), prunes every convolution but the 7x7
stem to `sparsity` by per-layer magnitude, swaps them for SparseConv2d, and times both models in one process,
alternating dense and sparse runs (batch 1, 224x224, fp32). BatchNorm, ReLU and pooling stay as they are.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..nn import SparseConv2d
from ..pruning import magnitude_mask


# ------------------------------------------------------------------------------------------- ResNet-50 fallback


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu()
        y = self.bn2(self.conv2(y)).relu()
        return (self.bn3(self.conv3(y)) + self.shortcut(x)).relu()


def _torch_resnet50() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for b in range(blocks):
            layers.append(_Bottleneck(cin, width, stride if b == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


def resnet50() -> tuple[nn.Module, str]:
    """(ResNet-50 in eval mode with random weights and BatchNorm statistics, where it comes from)."""
    try:
        from transformers import ResNetConfig, ResNetForImageClassification

        model, source = ResNetForImageClassification(ResNetConfig()), "transformers ResNetForImageClassification"
    except ImportError:
        model, source = _torch_resnet50(), "torch modules (transformers not installed)"
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval(), source


def sparsify_convs(model: nn.Module, sparsity: float, format: str = "csr", skip_stem: bool = True) -> nn.Module:
    """Replaces every nn.Conv2d (but the 7x7 stem) by a SparseConv2d pruned to `sparsity` by per-layer magnitude."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Conv2d) or (skip_stem and child.kernel_size == (7, 7)):
                continue
            mask = magnitude_mask(child.weight.detach(), sparsity)
            setattr(module, child_name, SparseConv2d.from_dense(child, format, mask=mask))
    return model


# ------------------------------------------------------------------------------------------- timing


def _time_ms(fn, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e3


def _alternating(fns: dict, repeats: int, iters: int = 3) -> dict[str, float]:
    """Median over `repeats` rounds of each function's mean time over `iters` calls, the functions alternating
    inside every round so that machine noise hits them alike."""
    with torch.inference_mode():
        for fn in fns.values():
            fn(), fn()
        samples = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                samples[k].append(_time_ms(fn, iters))
    return {k: statistics.median(v) for k, v in samples.items()}


def _conv_layer_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of each convolution (dense or sparse) inside one forward pass, by module name."""
    times: dict[str, list[float]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, SparseConv2d)):
            def pre(mod, args, name=name):
                mod._t0 = time.perf_counter()

            def post(mod, args, out, name=name):
                times.setdefault(name, []).append((time.perf_counter() - mod._t0) * 1e3)

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    with torch.inference_mode():
        for _ in range(repeats + 1):
            model(x)
    for h in handles:
        h.remove()
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def resnet50_speedup(sparsity: float = 0.8, threads: int = 2, repeats: int = 5, format: str = "csr",
                     per_layer: bool = False) -> dict:
    """ResNet-50, batch 1, 224x224, fp32 on `threads` threads: dense vs every conv but the stem sparse.

    Returns {"dense_ms", "sparse_ms", "speedup", "max_abs_diff", "model", "cpu", "threads", "sparsity",
    "format", and with per_layer=True "layers": [(name, shape, dense_ms, sparse_ms)]}."""
    import copy

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        dense, source = resnet50()
        sparse = sparsify_convs(copy.deepcopy(dense), sparsity, format)
        # The dense model runs the same pruned weights: the comparison is the kernel, not the arithmetic.
        dense_pruned = copy.deepcopy(sparse)
        for name, module in list(dense_pruned.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, SparseConv2d):
                    setattr(module, child_name, child.to_dense_module())
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            y_dense, y_sparse = dense_pruned(x), sparse(x)
        t = _alternating({"dense": lambda: dense_pruned(x), "sparse": lambda: sparse(x)}, repeats)
        out = {
            "model": source, "cpu": _cpu_name(),
            "threads": threads, "sparsity": sparsity, "format": format,
            "dense_ms": t["dense"], "sparse_ms": t["sparse"], "speedup": t["dense"] / t["sparse"],
            "max_abs_diff": float((_logits(y_dense) - _logits(y_sparse)).abs().max()),
        }
        if per_layer:
            td, ts = _conv_layer_times(dense_pruned, x, repeats), _conv_layer_times(sparse, x, repeats)
            shapes = {n: _conv_shape(m) for n, m in dense_pruned.named_modules() if isinstance(m, nn.Conv2d)}
            out["layers"] = [(n, shapes[n], td[n], ts[n]) for n in td]
        return out
    finally:
        torch.set_num_threads(old_threads)


def conv_shapes_table(sparsity: float = 0.8, threads: int = 2, repeats: int = 7,
                      format: str = "csr") -> list[dict]:
    """Representative ResNet-50 convolutions (1x1 and 3x3 at 56/28/14/7), batch 1, fp32: dense vs sparse ms."""
    cases = [(256, 64, 1, 56), (64, 64, 3, 56), (512, 128, 1, 28), (128, 128, 3, 28), (1024, 256, 1, 14),
             (256, 256, 3, 14), (2048, 512, 1, 7), (512, 512, 3, 7)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for ci, co, k, hw in cases:
            conv = nn.Conv2d(ci, co, k, padding=k // 2, bias=False)
            sparse = SparseConv2d.from_dense(conv, format, mask=magnitude_mask(conv.weight.detach(), sparsity))
            dense = sparse.to_dense_module()
            x = torch.randn(1, ci, hw, hw)
            t = _alternating({"dense": lambda: dense(x), "sparse": lambda: sparse(x)}, repeats, iters=5)
            rows.append({"shape": f"{ci}->{co} {k}x{k} @ {hw}x{hw}", "dense_ms": t["dense"],
                         "sparse_ms": t["sparse"], "speedup": t["dense"] / t["sparse"]})
    finally:
        torch.set_num_threads(old_threads)
    return rows


def _logits(y):
    return y.logits if hasattr(y, "logits") else y


def _conv_shape(m: nn.Conv2d) -> str:
    return f"{m.in_channels}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--format", default="csr")
    p.add_argument("--layers", action="store_true", help="per-layer times")
    p.add_argument("--shapes", action="store_true", help="the representative conv shapes table")
    a = p.parse_args()
    if a.shapes:
        print("| conv (batch 1) | dense ms | sparse ms | speedup |\n|---|---|---|---|")
        for r in conv_shapes_table(a.sparsity, a.threads, format=a.format):
            print(f"| {r['shape']} | {r['dense_ms']:.3f} | {r['sparse_ms']:.3f} | {r['speedup']:.2f}x |")
    r = resnet50_speedup(a.sparsity, a.threads, a.repeats, a.format, per_layer=a.layers)
    print(f"{r['model']}, {r['cpu']}, {r['threads']} threads, {r['sparsity']:.0%} {r['format']}: dense "
          f"{r['dense_ms']:.1f} ms, sparse {r['sparse_ms']:.1f} ms, {r['speedup']:.2f}x "
          f"(max |logit diff| {r['max_abs_diff']:.2e})")
    for name, shape, d, s in r.get("layers", []):
        print(f"{name:60s} {shape:22s} dense {d:7.3f} ms  sparse {s:7.3f} ms  {d / s:5.2f}x")


if __name__ == "__main__":
    main()

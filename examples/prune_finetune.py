"""Accuracy vs sparsity, with and without fine-tuning (MIT 6.S965 lecture 3's curve), on CPU in seconds.

A student MLP learns a synthetic 10-class problem labelled by a random teacher network, then is pruned by
weight magnitude at growing sparsity: once straight from the dense model with no fine-tuning ("prune only"),
and iteratively (prune to the next level, fine-tune, repeat: Han et al. 2015) up to 90%. Pruned weights stay
exactly zero during fine-tuning (sparsekern writes masks as torch.nn.utils.prune reparametrisations). The last
model then runs on the sparse kernels (sparsify_) with the same accuracy.

    python examples/prune_finetune.py
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

import sparsekern as sk

LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)


def make_data(n: int, dim: int = 16, classes: int = 10, seed: int = 0):
    """Gaussian inputs labelled by the argmax of a random two-layer tanh teacher: a nonlinear problem whose
    decision boundaries need the student's capacity."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(dim, 32, generator=g) / dim**0.5, torch.randn(32, classes, generator=g)
    x = torch.randn(n, dim, generator=g)
    return x, (torch.tanh(x @ w1 / 2) @ w2).argmax(1)


def student(dim: int = 16, hidden: int = 128, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def train(model: nn.Module, x, y, epochs: int, lr: float, seed: int, batch: int = 128) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def main(n_train: int = 8000, epochs: int = 30, finetune_epochs: int = 6, levels=LEVELS, seed: int = 0, verbose=True):
    """Returns [{"sparsity", "pruned" (one-shot, no fine-tuning), "finetuned" (iterative)}] plus the dense row."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matmuls this small gain nothing from threads, and lose much on a busy machine
    try:
        return experiment(n_train, epochs, finetune_epochs, levels, seed, verbose)
    finally:
        torch.set_num_threads(threads)


def experiment(n_train, epochs, finetune_epochs, levels, seed, verbose):
    torch.manual_seed(seed)
    start = time.perf_counter()
    x, y = make_data(n_train + 4000, seed=seed)
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    dense = student()
    train(dense, xtr, ytr, epochs, 3e-3, seed)
    rows = [{"sparsity": 0.0, "pruned": accuracy(dense, xte, yte), "finetuned": accuracy(dense, xte, yte)}]

    iterative = copy.deepcopy(dense)
    history = sk.pruning.iterative_prune(
        iterative, list(levels),
        finetune=lambda model, k: train(model, xtr, ytr, finetune_epochs, 1e-3, seed + k + 1),
        evaluate=lambda model: accuracy(model, xte, yte),
    )  # fmt: skip
    for h in history:
        one_shot = copy.deepcopy(dense)
        sk.pruning.prune(one_shot, h["target"])
        rows.append({"sparsity": h["sparsity"], "pruned": accuracy(one_shot, xte, yte), "finetuned": h["finetuned"]})
    # The final model on the CSR kernels (explicit format: layers this small run faster dense, so "auto" would
    # keep them dense): the same accuracy, computed by sparsekern.
    sk.pruning.remove(iterative)
    sk.sparsify_(iterative, "csr")
    rows[-1]["sparse_kernels"] = accuracy(iterative, xte, yte)
    if verbose:
        print(f"{'sparsity':>8}  {'prune only':>10}  {'prune + fine-tune':>17}")
        for r in rows:
            print(f"{r['sparsity']:>8.1%}  {r['pruned']:>10.1%}  {r['finetuned']:>17.1%}")
        print(f"\nthe last model on sparsekern's CSR kernels: {rows[-1]['sparse_kernels']:.1%}\n")
        print(sk.report(iterative, xte[:1]))
        print(f"\n{time.perf_counter() - start:.1f} s")
    return rows


if __name__ == "__main__":
    main()

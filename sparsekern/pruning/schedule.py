"""Pruning schedules: one-shot (`prune` itself), iterative (prune, fine-tune, prune more) and gradual
(Zhu & Gupta 2017: sparsity follows a cubic ramp during training).

Every step prunes with `prune` towards the step's overall target. Masks are written as reparametrisations, so
between pruning steps they stay fixed: the weights that training updates are weight_orig, their masked entries
get zero gradient and the module computes with weight_orig * mask, so pruned weights stay exactly zero whatever
the optimiser (momentum, weight decay) does. Weights pruned once stay pruned (they are zero, and zero weights
count as pruned), so each step's target is the total sparsity, not an increment.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .._checks import check_fraction, check_int, fail
from .layers import model_sparsity
from .prune import prune


def polynomial_sparsity(
    step: int, final_sparsity: float, begin_step: int, end_step: int, initial_sparsity: float = 0.0, power: int = 3
) -> float:
    """Zhu & Gupta's schedule: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^power for t0 <= t <= t1,
    s_i before t0 and s_f after t1. Pruning fast early (when redundant weights abound) and slowly late."""
    where = "sparsekern.pruning.polynomial_sparsity"
    check_fraction(where, final_sparsity, "final_sparsity")
    check_fraction(where, initial_sparsity, "initial_sparsity")
    for name, v in (("step", step), ("begin_step", begin_step), ("end_step", end_step), ("power", power)):
        check_int(where, v, name)
    if end_step < begin_step:
        fail(where, ValueError, f"need begin_step <= end_step, got {begin_step} and {end_step}")
    if step <= begin_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    frac = (step - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac) ** power


def iterative_sparsities(final_sparsity: float, rounds: int) -> list[float]:
    """Targets for `rounds` rounds that each prune the same fraction of the weights still alive, ending at
    `final_sparsity`: 1 - (1 - s)^(k / rounds) for k = 1..rounds (e.g. 0.9 in 3 rounds: 0.54, 0.78, 0.9)."""
    where = "sparsekern.pruning.iterative_sparsities"
    check_fraction(where, final_sparsity, "final_sparsity")
    check_int(where, rounds, "rounds", 1)
    return [1.0 - (1.0 - final_sparsity) ** (k / rounds) for k in range(1, rounds + 1)]


def iterative_prune(
    model: nn.Module,
    sparsities: list[float],
    finetune: Callable[[nn.Module, int], None],
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
    **prune_options,
) -> list[dict]:
    """For each target in `sparsities`: prune(model, target, **prune_options), then `finetune(model, round)`.
    Returns one row per round: round, target, sparsity reached (over the pruned layers) and, with
    `evaluate(model) -> metric`, the metric right after pruning ("pruned") and after fine-tuning ("finetuned")."""
    history = []
    for k, target in enumerate(sparsities):
        prune(model, target, **prune_options)
        row = {"round": k, "target": target, "sparsity": model_sparsity(model, prune_options.get("filter_fn"))}
        if evaluate is not None:
            row["pruned"] = evaluate(model)
        finetune(model, k)
        if evaluate is not None:
            row["finetuned"] = evaluate(model)
        history.append(row)
    return history


class GradualPruner:
    """Drives Zhu & Gupta's gradual pruning from inside a training loop: call `step(t)` before training step t.
    At t = begin_step, begin_step + frequency, ... and at end_step it prunes to polynomial_sparsity(t, ...)."""

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        *,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
        power: int = 3,
        **prune_options,
    ):
        where = "sparsekern.pruning.GradualPruner"
        check_fraction(where, final_sparsity, "final_sparsity")
        check_fraction(where, initial_sparsity, "initial_sparsity")
        for name, v in (("begin_step", begin_step), ("end_step", end_step), ("power", power)):
            check_int(where, v, name)
        check_int(where, frequency, "frequency", 1)
        if end_step < begin_step:
            fail(where, ValueError, f"need begin_step <= end_step, got {begin_step} and {end_step}")
        self.model = model
        self.schedule = dict(final_sparsity=final_sparsity, begin_step=begin_step, end_step=end_step,
                             initial_sparsity=initial_sparsity, power=power)  # fmt: skip
        self.steps = set(range(begin_step, end_step + 1, frequency)) | {end_step}
        self.prune_options = prune_options

    def step(self, t: int) -> float | None:
        """Prunes if t is a pruning step; returns the target it pruned to, else None."""
        if t not in self.steps:
            return None
        target = polynomial_sparsity(t, **self.schedule)
        prune(self.model, target, **self.prune_options)
        return target


def gradual_prune(
    model: nn.Module,
    train_step: Callable[[int], object],
    total_steps: int,
    final_sparsity: float,
    *,
    begin_step: int = 0,
    end_step: int | None = None,
    frequency: int = 100,
    initial_sparsity: float = 0.0,
    power: int = 3,
    **prune_options,
) -> list[tuple[int, float]]:
    """Runs `train_step(t)` (one optimiser step of the user's training) for t in [0, total_steps), pruning on
    Zhu & Gupta's schedule before the scheduled steps (end_step defaults to 3/4 of total_steps, leaving the rest
    to recover at the final sparsity). Returns [(step, target)] of the pruning steps."""
    end = int(0.75 * total_steps) if end_step is None else end_step
    pruner = GradualPruner(model, final_sparsity, begin_step, end, frequency=frequency,
                           initial_sparsity=initial_sparsity, power=power, **prune_options)  # fmt: skip
    history = []
    for t in range(total_steps):
        target = pruner.step(t)
        if target is not None:
            history.append((t, target))
        train_step(t)
    return history

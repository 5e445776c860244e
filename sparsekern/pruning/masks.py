"""Granularities: which weights are pruned together, on the 2-D view of a weight that the kernels multiply.

The 2-D view of a Linear weight (out, in) is the weight itself; a Conv weight (co, ci, kh, kw) is viewed as
(co, ci*kh*kw), the row-major flattening `W.reshape(co, -1)` (the im2col column order that the sparse kernels
use). In that view a kh x kw kernel is kh*kw consecutive columns and input channel c is the column range
[c*kh*kw, (c+1)*kh*kw).

On the 2-D view every granularity except n:m is a grid of (bm, bk) tiles anchored at (0, 0); where a tile does
not divide the matrix the last row/column of tiles is smaller ("ragged edges"):

    element        (1, 1)
    vector         (1, v)        row segments; v defaults to kw for convolutions (a kernel row), 4 for Linear
    kernel         (1, kh*kw)    a whole kernel (an element for Linear, whose kernels are 1x1)
    block          (bm, bk)      the tiles BSRMatrix stores
    channel dim 0  (1, K)        whole output channels (filters) / Linear rows
    channel dim 1  (M, kh*kw)    whole input channels / Linear columns

n:m instead groups m consecutive columns of a row (along the input dim) and keeps the n best of each group.

Selection rule (shared by every budgeted granularity): pruning sparsity s of a tensor with n elements targets
P = ceil(s*n) pruned elements (1e-6 slack for floating-point noise), i.e. at most floor((1-s)*n) kept. Groups are
pruned in increasing score order (ties: lower index first) until P is reached, so the result prunes at least P
elements and less than one group more. Weights that are already zero count as pruned: all-zero groups are
pruned first and free, so masks never bring a pruned weight back and the budget is on ||W * mask||_0.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_fraction, check_has_values, check_int, check_pair, check_tensor, fail

GRANULARITIES = ("element", "n:m", "block", "vector", "kernel", "channel")
_SLACK = 1e-6


def view2d(t: torch.Tensor) -> torch.Tensor:
    """The (rows, cols) view the kernels multiply: (out, in) for Linear, (co, ci*kh*kw) for convolutions."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))  # not -1: a zero-size weight has no inferable dim


def parse_granularity(granularity: str, n: int, m: int, where: str = "sparsekern.pruning") -> tuple[str, int, int]:
    """Accepts the names of GRANULARITIES, and "n:m" patterns spelled out ("2:4", "1:8") as a shorthand. For n:m,
    checks 1 <= n < m."""
    parts = granularity.split(":") if isinstance(granularity, str) else ()
    if granularity not in GRANULARITIES:
        if not (len(parts) == 2 and all(p.isdigit() for p in parts)):
            fail(where, ValueError, f"granularity must be one of {GRANULARITIES} or 'N:M', got {granularity!r}")
        granularity, n, m = "n:m", int(parts[0]), int(parts[1])
    if granularity == "n:m":
        check_int(where, n, "n")
        check_int(where, m, "m")
        if not 1 <= n < m:
            fail(where, ValueError, f"n:m needs 1 <= n < m, got n={n}, m={m}")
    return granularity, n, m


def tile_for(
    granularity: str,
    shape: tuple[int, ...],
    *,
    blocksize: tuple[int, int] = (16, 16),
    vector_size: int | None = None,
    channel_dim: int = 0,
    where: str = "sparsekern.pruning",
) -> tuple[int, int]:
    """The (bm, bk) tile of `granularity` on the 2-D view of a weight of `shape` (see the module docstring)."""
    rows = shape[0]
    ksize = math.prod(shape[2:])  # kh*kw; 1 for Linear
    if granularity == "element":
        return (1, 1)
    if granularity == "vector":
        v = vector_size if vector_size is not None else (shape[-1] if len(shape) > 2 else 4)
        return (1, max(1, check_int(where, v, "vector_size", 1 if vector_size is not None else 0)))
    # max(1, ...): a zero-size weight still gets a valid (empty) grid of tiles.
    if granularity == "kernel":
        return (1, max(1, ksize))
    if granularity == "block":
        return check_pair(where, blocksize, "blocksize", 1)
    if granularity == "channel":
        if channel_dim == 0:
            return (1, max(1, math.prod(shape[1:])))
        if channel_dim == 1:
            return (max(1, rows), max(1, ksize))
        fail(where, ValueError, f"channel_dim must be 0 (output channels) or 1 (input channels), got {channel_dim}")
    fail(where, ValueError, f"granularity {granularity!r} has no tile")


def group_sum(x2d: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """Sums x over the (bm, bk) tiles of the grid anchored at (0, 0): (ceil(M/bm), ceil(K/bk))."""
    bm, bk = tile
    M, K = x2d.shape
    gm, gk = -(-M // bm), -(-K // bk)
    padded = torch.nn.functional.pad(x2d, (0, gk * bk - K, 0, gm * bm - M))
    return padded.reshape(gm, bm, gk, bk).sum((1, 3))


def expand_groups(g: torch.Tensor, tile: tuple[int, int], shape2d: tuple[int, int]) -> torch.Tensor:
    """Inverse of group_sum's grouping: each tile's value broadcast over its elements, cropped to shape2d."""
    bm, bk = tile
    return g.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[: shape2d[0], : shape2d[1]]


def n_to_prune(sparsity: float, numel: int, where: str = "sparsekern.pruning") -> int:
    """P = ceil(sparsity * numel), with a little slack so 0.9 * 100 is 90, not 91."""
    sparsity = check_fraction(where, sparsity)
    return min(numel, max(0, math.ceil(sparsity * numel - _SLACK)))


def select_pruned(scores: torch.Tensor, gains: torch.Tensor, need: int) -> torch.Tensor:
    """Which groups to prune (bool, flat): all-zero groups (gain 0), then the lowest-scoring groups until the
    nonzero elements they hold (`gains`) reach `need`."""
    if bool(torch.isnan(scores).any()):
        fail("sparsekern.pruning", ValueError, "importance scores contain NaN (check the weights, loss and data)")
    gains = gains.to(torch.int64)
    pruned = gains == 0
    if need > 0:
        order = torch.sort(torch.where(pruned, float("-inf"), scores.double()), stable=True).indices
        cum = gains[order].cumsum(0)
        k = int(torch.searchsorted(cum, torch.tensor([need], dtype=cum.dtype, device=cum.device))[0])
        pruned[order[: k + 1]] = True
    return pruned


def group_scores(scores2d: torch.Tensor, tile: tuple[int, int], agg: str = "mean") -> torch.Tensor:
    """Aggregates element scores over each tile, per element so ragged edge tiles compete fairly with full
    ones: "mean" (sum / tile size: the group's L1 norm per element for |w|, its OBD/Taylor estimate per pruned
    element) or "rms" (sqrt(sum / size) of squared scores: the L2 norm per sqrt(element))."""
    scores2d = scores2d.float() if scores2d.dtype in (torch.float16, torch.bfloat16) else scores2d
    if tile == (1, 1):
        return scores2d.sqrt() if agg == "rms" else scores2d
    sizes = group_sum(torch.ones_like(scores2d), tile)
    mean = group_sum(scores2d, tile) / sizes
    return mean.sqrt() if agg == "rms" else mean


def nm_keep(scores2d: torch.Tensor, alive2d: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keeps the n best-scoring alive elements of every m consecutive columns of each row. A ragged tail of
    r < m columns keeps min(n, r) of them. Zero (dead) weights are never kept."""
    if not 1 <= n < m:
        fail("sparsekern.pruning.nm_mask", ValueError, f"n:m needs 1 <= n < m, got n={n}, m={m}")
    M, K = scores2d.shape
    groups = -(-K // m)
    s = torch.where(alive2d, scores2d.double(), float("-inf"))
    s = torch.nn.functional.pad(s, (0, groups * m - K), value=float("-inf")).reshape(M, groups, m)
    best = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :n]
    keep = torch.zeros(M, groups, m, dtype=torch.bool, device=scores2d.device).scatter_(-1, best, True)
    return keep.reshape(M, groups * m)[:, :K] & alive2d


def weight_mask(
    W: torch.Tensor,
    sparsity: float | None = None,
    granularity: str = "element",
    *,
    scores: torch.Tensor | None = None,
    agg: str = "mean",
    n: int = 2,
    m: int = 4,
    blocksize: tuple[int, int] = (16, 16),
    vector_size: int | None = None,
    channel_dim: int = 0,
    _where: str = "sparsekern.pruning.weight_mask",
) -> torch.Tensor:
    """The keep-mask (bool, shaped like W, True = keep) of one weight at one granularity.

    `scores` are element importances shaped like W (default |W|), aggregated per group with `agg`. For n:m
    the pattern fixes the sparsity: `sparsity` must be None (or equal to 1 - n/m).

    `_where` is for sparsekern's own callers: the public function named in errors."""
    where = _where
    granularity, n, m = parse_granularity(granularity, n, m, where)
    check_tensor(where, W, "W")
    if W.dim() < 1:
        fail(where, ValueError, f"W must have at least 1 dimension, got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        fail(where, TypeError, f"W must be a floating-point tensor, got {W.dtype}")
    check_has_values(where, W, "W")
    if agg not in ("mean", "rms"):
        fail(where, ValueError, f"agg must be 'mean' or 'rms', got {agg!r}")
    W2 = view2d(W.detach())
    if scores is not None:
        check_tensor(where, scores, "scores")
        if scores.shape != W.shape:
            fail(where, ValueError, f"scores shape {tuple(scores.shape)} != weight shape {tuple(W.shape)}")
    s2 = W2.abs() if scores is None else view2d(scores.detach())
    alive = W2 != 0
    if granularity == "n:m":
        check_nm_sparsity(where, sparsity, n, m)
        return nm_keep(s2, alive, n, m).reshape(W.shape)
    if sparsity is None:
        fail(where, ValueError, f"granularity {granularity!r} needs a sparsity")
    n_prune = n_to_prune(sparsity, W.numel(), where)
    tile = tile_for(granularity, tuple(W.shape), blocksize=blocksize, vector_size=vector_size, channel_dim=channel_dim,
                    where=where)
    keep = keep_from_group_scores(group_scores(s2, tile, agg), alive, tile, n_prune)
    return keep.reshape(W.shape)


def check_nm_sparsity(where: str, sparsity, n: int, m: int) -> None:
    """n:m fixes the sparsity at 1 - n/m: a given sparsity must be that (not silently ignored)."""
    if sparsity is None:
        return
    sparsity = check_fraction(where, sparsity)
    if abs(sparsity - (1 - n / m)) > _SLACK:
        fail(where, ValueError, f"n:m = {n}:{m} fixes the sparsity at {1 - n / m}; got {sparsity}: pass None")


def keep_from_group_scores(gscores: torch.Tensor, alive2d: torch.Tensor, tile, n_prune: int) -> torch.Tensor:
    """The 2-D keep-mask that prunes the lowest `gscores` tiles until `n_prune` elements are pruned."""
    gains = group_sum(alive2d.to(torch.int64), tile)
    need = n_prune - (alive2d.numel() - int(gains.sum()))
    pruned = select_pruned(gscores.flatten(), gains.flatten(), need).reshape(gscores.shape)
    return expand_groups(~pruned, tile, tuple(alive2d.shape))


def magnitude_mask(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Element-wise magnitude pruning: keeps the largest |w|, pruning ceil(sparsity * numel) weights."""
    return weight_mask(W, sparsity, "element", _where="sparsekern.pruning.magnitude_mask")


def nm_mask(W: torch.Tensor, n: int = 2, m: int = 4, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Keeps the n largest |w| (or `scores`) of every m consecutive weights along the input dim of the 2-D view
    (for a Conv2d: along ci*kh*kw, the flattening W.reshape(co, -1) that the kernels multiply)."""
    return weight_mask(W, None, "n:m", scores=scores, n=n, m=m, _where="sparsekern.pruning.nm_mask")


def block_mask(W: torch.Tensor, sparsity: float, blocksize: tuple[int, int] = (16, 16), scores=None) -> torch.Tensor:
    """Prunes whole (bm, bk) blocks of the 2-D view with the lowest mean |w| (or mean `scores`); the grid is
    anchored at (0, 0) and edge blocks are smaller when the blocksize does not divide the matrix."""
    return weight_mask(W, sparsity, "block", scores=scores, blocksize=blocksize,
                       _where="sparsekern.pruning.block_mask")


def is_nm(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every m consecutive entries along the 2-D view's rows hold at most n True (a ragged tail too)."""
    M2 = view2d(mask).to(torch.int64)
    counts = group_sum(M2, (1, m))
    return bool((counts <= n).all())


def is_block_pattern(mask: torch.Tensor, blocksize: tuple[int, int]) -> bool:
    """Whether every (bm, bk) tile of the 2-D view (grid anchored at (0, 0)) is entirely True or entirely False."""
    M2 = view2d(mask).to(torch.int64)
    counts = group_sum(M2, blocksize)
    sizes = group_sum(torch.ones_like(M2), blocksize)
    return bool(((counts == 0) | (counts == sizes)).all())

"""Pruning (MIT 6.S965 lecture 3): granularities, criteria, budgets, schedules, structured shrinking, and the
masks the sparse formats consume. Masks are bool tensors shaped like the weight, True = keep.

    magnitude_mask / nm_mask / block_mask / weight_mask   one tensor          (masks.py)
    compute_masks / prune                                 a model             (prune.py, criteria.py)
    iterative_prune / gradual_prune / GradualPruner        schedules           (schedule.py)
    shrink_ / shrink_plan                                  structured removal  (structured.py, graph.py)
    read_masks / write_masks / remove                      torch.nn.utils.prune interop (interop.py)
    to_format                                              masks -> CSRMatrix / BSRMatrix / Semi24Matrix
"""

from .criteria import CRITERIA, hessian_diagonal, taylor_scores
from .formats import to_format
from .graph import ChannelGraph, bn_after
from .interop import read_masks, remove, write_masks
from .layers import model_sparsity, prunable_layers
from .masks import GRANULARITIES, block_mask, is_block_pattern, is_nm, magnitude_mask, nm_mask, view2d, weight_mask
from .prune import compute_masks, prune
from .schedule import GradualPruner, gradual_prune, iterative_prune, iterative_sparsities, polynomial_sparsity
from .structured import shrink_, shrink_plan

__all__ = [
    "CRITERIA",
    "GRANULARITIES",
    "ChannelGraph",
    "GradualPruner",
    "block_mask",
    "bn_after",
    "compute_masks",
    "gradual_prune",
    "hessian_diagonal",
    "is_block_pattern",
    "is_nm",
    "iterative_prune",
    "iterative_sparsities",
    "magnitude_mask",
    "model_sparsity",
    "nm_mask",
    "polynomial_sparsity",
    "prunable_layers",
    "prune",
    "read_masks",
    "remove",
    "shrink_",
    "shrink_plan",
    "taylor_scores",
    "to_format",
    "view2d",
    "weight_mask",
    "write_masks",
]

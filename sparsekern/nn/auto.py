"""format="auto": the fastest format for one layer's pattern on this machine, dense unless sparse is faster.

Candidates: csr (any pattern), bsr with 16/32/64 blocks (scored by the fraction of blocks holding a kept weight),
2:4 (when every aligned group of 4 along K keeps at most 2). Each is scored by the machine's measured table
(sparsekern.tuning) at every token count the layer is expected to see; a format is taken only if its worst
predicted speedup clears MARGIN, so the table's interpolation error cannot make the layer slower than dense.
`sparsify_(model, example_inputs=...)` goes further and times the candidates on each layer's real input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import tuning
from ..pruning.masks import group_sum, is_nm

# A sparse format must be predicted at least this much faster than dense at every token count. The tables'
# points are medians of 5 calls on a noisy 2-core VM, where the same call varies by ~5-10% between runs.
MARGIN = 1.1
# Token counts a Linear is judged at when the caller does not say: decode (1), a short prompt (16), a batch (64).
DEFAULT_TOKENS = (1, 16, 64)
# Output positions a convolution is judged at when no example input says (224x224 ResNet stages see 49-3136).
DEFAULT_CONV_TOKENS = (196,)


@dataclass
class Decision:
    format: str  # "csr", "bsr", "2:4" or "dense"
    blocksize: tuple[int, int] | None
    reason: str
    predicted: dict[str, float] = field(default_factory=dict)  # candidate -> worst predicted speedup over dense
    measured: dict[str, float] = field(default_factory=dict)  # candidate -> measured speedup (example_inputs)

    def candidate(self) -> str:
        return f"bsr{self.blocksize[0]}" if self.format == "bsr" else self.format


def kept(W: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return (W != 0) if mask is None else mask.to(device=W.device, dtype=torch.bool)


def block_density(keep: torch.Tensor, b: int) -> float:
    """The fraction of (b, b) blocks (edges padded) holding a kept element."""
    blocks = group_sum(keep.to(torch.int64), (b, b)) > 0
    return float(blocks.float().mean()) if blocks.numel() else 1.0


def candidates(keep: torch.Tensor) -> dict[str, float]:
    """{candidate: density it would run at} for the formats that can hold the pattern."""
    out = {"csr": float(keep.float().mean()) if keep.numel() else 0.0}
    for b in tuning.BSR_BLOCKS:
        if min(keep.shape) >= b:
            out[f"bsr{b}"] = block_density(keep, b)
    if keep.numel() and is_nm(keep, 2, 4):
        out["2:4"] = 0.5
    return out


def _as_tokens(n_tokens, kind: str) -> tuple[int, ...]:
    if n_tokens is None:
        return DEFAULT_CONV_TOKENS if kind == "conv" else DEFAULT_TOKENS
    return (int(n_tokens),) if isinstance(n_tokens, int) else tuple(int(n) for n in n_tokens)


def split(candidate: str) -> tuple[str, tuple[int, int] | None]:
    """("bsr", (32, 32)) for "bsr32"; (name, None) otherwise."""
    if candidate.startswith("bsr"):
        b = int(candidate[3:])
        return "bsr", (b, b)
    return candidate, None


def choose(W: torch.Tensor, mask: torch.Tensor | None = None, n_tokens=None, kind: str = "linear",
           allowed=None) -> Decision:
    """The format for weight W (M, K) (kept where W != 0, or where `mask` is True) at `n_tokens`."""
    tokens = _as_tokens(n_tokens, kind)
    keep = kept(W.detach(), mask)
    tab, source = tuning.table(W.device)
    if tab is None:
        return Decision("dense", None, f"dense: {source}")
    # A format the table did not measure is never predicted, so never picked.
    cands = {c: d for c, d in candidates(keep).items() if c in tab["speedup"] and (allowed is None or c in allowed)}
    predicted = {c: min(tuning.speedup(tab, c, d, n) for n in tokens) for c, d in cands.items()}
    shown = ", ".join(f"{c} {s:.2f}x" for c, s in sorted(predicted.items(), key=lambda kv: -kv[1]))
    where = f"N={'/'.join(map(str, tokens))}, {source}"
    best = max(predicted, key=predicted.get, default=None)
    if best is None or predicted[best] < MARGIN:
        return Decision("dense", None, f"dense: no format predicted >= {MARGIN}x dense ({shown}; {where})", predicted)
    fmt, blocksize = split(best)
    return Decision(fmt, blocksize, f"{best}: predicted {predicted[best]:.2f}x dense ({shown}; {where})", predicted)


def wants_bitmap(W: torch.Tensor, mask: torch.Tensor | None, fmt: str) -> bool:
    """Whether a CSR weight should carry the bitmap (1/8 byte per element): only where dispatch can pick the
    bitmap kernel for it — fp16/bf16 on CUDA (tensor cores), or CPU decode at the densities its table lists."""
    if fmt != "csr":
        return False
    return bitmap_for(float(kept(W, mask).float().mean()) if W.numel() else 0.0, W.dtype, W.device)


def bitmap_for(density: float, dtype: torch.dtype, device: torch.device) -> bool:
    """wants_bitmap for a CSR weight of this density, dtype and device (what a loader knows without a dense W)."""
    from .. import dispatch

    if device.type == "cuda":
        return dtype != torch.float32
    table = dispatch.CPU_BITMAP_MIN_DENSITY[dispatch.cpu_isa()]
    return bool(table) and density >= min(table.values())

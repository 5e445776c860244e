"""compressed-tensors sparse checkpoints (the layout llm-compressor publishes and vLLM reads), without a dense copy.

A checkpoint is a Hugging Face style directory: `config.json` whose `quantization_config.sparsity_config` names the
format, `targets` and `ignore`, and `model.safetensors` (or shards listed in `model.safetensors.index.json`). Each
target layer's weight is stored under the layer's name (the `.weight` suffix dropped), as compressed-tensors 0.12
writes it:

| format            | tensors of layer L (weight (M, K))                                                           |
| ----------------- | -------------------------------------------------------------------------------------------- |
| sparse-bitmask    | L.compressed (nnz,) the nonzeros row-major; L.bitmask uint8 (M, ceil(K/8)); L.row_offsets     |
|                   | (M,) int64, where each row starts in `compressed`; L.shape int64 [M, K]                        |
| sparse-24-bitmask | L.compressed (M, K/2) the two kept values of every group of 4; L.bitmask; L.shape (2, 1)      |

Bitmask bit j of byte b of row r is column 8b + j (numpy packbits, bitorder="little"). Other tensors are stored as
they are. Targets and ignore entries are exact module names, `re:` regexes (re.match from the start of the name)
or class names anywhere in the module's MRO, with "Linear" also matching SparseLinear (as vLLM's LinearBase does).

Loading builds sparsekern's formats from the compressed tensors directly:
- sparse-bitmask -> CSRMatrix: row pointers are the row offsets, the values are `compressed` as stored, and the
  column indices come from the bitmask a block of rows at a time (`_ROW_BLOCK_ELEMENTS` bits unpacked at once), so
  no temporary is ever the size of the dense weight; the CSR bitmap, when the kernels want one, is the bitmask
  itself regrouped into 32-bit words (the same little-endian bit order).
- sparse-24-bitmask -> Semi24Matrix: each 4-bit group mask maps to the 2-bit index pair through a 16-entry table,
  packed into the mma.sp metadata a block of rows at a time; the values are `compressed` padded to the format's
  64-column K tile. Nothing dense is materialised here either.
Everything is read and checked before the model is touched, so a bad checkpoint raises (naming the file and the
tensor) and leaves the model as it was.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

import torch
from torch import nn

from .._checks import fail, index_dtype_for
from .._constants import SEMI24_M_BLOCK
from ..formats import BSRMatrix, CSRMatrix, Semi24Matrix
from ..formats.csr import bitmap_of, bitmap_words, cols_to, compact_col_dtype
from ..formats.semi24 import EMPTY_NIBBLE, pack_metadata, padded_k, unpack_metadata

SPARSE_FORMATS = ("sparse-bitmask", "sparse-24-bitmask")
# The compressed-tensors release whose writers this module follows (and whose files the tests were built from).
CT_VERSION = "0.12.2"
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
# Bits unpacked per block of rows when reading a bitmask (4 Mi: 4 MiB of bool), whatever the layer's size.
_ROW_BLOCK_ELEMENTS = 1 << 22
_LOAD = "sparsekern.load_compressed"
_SAVE = "sparsekern.save_compressed"

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_INTS = (torch.int64, torch.int32)

# 4-bit group mask with exactly two bits set -> the 2:4 metadata nibble idx0 | idx1 << 2 (idx0 < idx1); -1 else.
_NIBBLE_OF_MASK = torch.full((16,), -1, dtype=torch.int64)
for _i in range(4):
    for _j in range(_i + 1, 4):
        _NIBBLE_OF_MASK[(1 << _i) | (1 << _j)] = _i | (_j << 2)
_POPCOUNT = torch.tensor([bin(b).count("1") for b in range(256)], dtype=torch.int64)


def _require_safetensors(where: str):
    try:
        import safetensors.torch  # noqa: F401
        from safetensors import safe_open
    except ImportError as e:
        fail(where, ImportError, f"needs the safetensors package (pip install sparsekern[hf]): {e}")
    return safe_open


# ---------------------------------------------------------------------------------------------- target matching


def matches(name: str, module: nn.Module, patterns) -> bool:
    """Whether `module` called `name` matches one of compressed-tensors' target/ignore `patterns`."""
    from ..nn import SparseLinear

    for p in patterns or ():
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif p == name:
            return True
        elif any(c.__name__ == p for c in type(module).__mro__) or (p == "Linear" and isinstance(module, SparseLinear)):
            return True
    return False


def target_names(model: nn.Module, targets, ignore) -> list[str]:
    """Names of the modules of `model` that `targets` select and `ignore` does not, in module order."""
    return [n for n, m in model.named_modules() if matches(n, m, targets) and not matches(n, m, ignore)]


# ------------------------------------------------------------------------------------------------ reading files


def read_sparsity_config(path: str) -> dict:
    """The `quantization_config.sparsity_config` of the checkpoint at `path`; ValueError for a checkpoint that is
    quantized, or whose sparsity format sparsekern does not read."""
    cfg_file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_file):
        fail(_LOAD, FileNotFoundError, f"{cfg_file} does not exist (expected a Hugging Face style checkpoint "
                                       "directory)")
    try:
        with open(cfg_file) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        fail(_LOAD, ValueError, f"{cfg_file} is not valid JSON: {e}")
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        fail(_LOAD, ValueError, f"{cfg_file} has no quantization_config (not a compressed-tensors checkpoint)")
    if qc.get("quant_method", "compressed-tensors") != "compressed-tensors":
        fail(_LOAD, ValueError, f"{cfg_file}: quant_method {qc.get('quant_method')!r} is not 'compressed-tensors'")
    if qc.get("config_groups") or qc.get("format") not in (None, "dense"):
        fail(_LOAD, ValueError, f"{cfg_file}: the checkpoint is quantized (format {qc.get('format')!r}, config_groups "
                                f"{sorted(qc.get('config_groups') or {})}); sparsekern reads unquantized sparse "
                                "checkpoints only")
    sc = qc.get("sparsity_config") or {}
    fmt = sc.get("format")
    if fmt not in SPARSE_FORMATS + ("dense",):
        fail(_LOAD, ValueError, f"{cfg_file}: sparsity format {fmt!r} is not one of {SPARSE_FORMATS}")
    return {"format": fmt, "targets": sc.get("targets") or [], "ignore": sc.get("ignore") or [], "file": cfg_file}


class _Checkpoint:
    """The tensors of a checkpoint directory: headers parsed up front (shape, dtype, file) so every check runs before
    any data is read; `get` reads one tensor."""

    def __init__(self, path: str):
        index = os.path.join(path, INDEX_NAME)
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map", {})
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            weight_map = None
        if not files:
            fail(_LOAD, FileNotFoundError, f"no *.safetensors file in {path}")
        self.where: dict[str, str] = {}
        self.header: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for name in files:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                fail(_LOAD, FileNotFoundError, f"{index} lists {name}, which does not exist")
            for key, (shape, dtype) in _read_header(file).items():
                if weight_map is not None and weight_map.get(key) != name:
                    fail(_LOAD, ValueError, f"{file}: tensor '{key}' is not listed for this file in {index}")
                self.where[key], self.header[key] = file, (shape, dtype)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.where))
            if missing:
                fail(_LOAD, ValueError, f"{index} lists {missing[:5]} but their files do not hold them")
        self._safe_open = _require_safetensors(_LOAD)

    def get(self, key: str) -> torch.Tensor:
        with self._safe_open(self.where[key], framework="pt") as f:
            return f.get_tensor(key)


def _read_header(file: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{key: (shape, dtype)} from a safetensors header, checking that every tensor's bytes lie inside the file (a
    truncated file fails here, naming the first tensor cut off)."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            fail(_LOAD, ValueError, f"{file}: truncated (no safetensors header)")
        n = int.from_bytes(raw, "little")
        if n > size - 8:
            fail(_LOAD, ValueError, f"{file}: truncated (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            fail(_LOAD, ValueError, f"{file}: the safetensors header is not valid JSON: {e}")
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
            fail(_LOAD, ValueError, f"{file}: tensor '{key}' has dtype {info.get('dtype')!r}, which sparsekern does "
                                    "not load (a quantized checkpoint?)")
        shape = tuple(int(s) for s in info["shape"])
        begin, end = info["data_offsets"]
        if end - begin != math.prod(shape) * dtype.itemsize:
            fail(_LOAD, ValueError, f"{file}: tensor '{key}' has {end - begin} bytes for shape {shape} {dtype}")
        if 8 + n + end > size:
            fail(_LOAD, ValueError, f"{file}: tensor '{key}' is truncated (its data ends at byte {8 + n + end}, the "
                                    f"file has {size})")
        out[key] = (shape, dtype)
    return out


# ---------------------------------------------------------------------------------------- bitmask <-> formats


def _row_block(K: int, multiple: int = 1) -> int:
    rows = max(1, _ROW_BLOCK_ELEMENTS // max(K, 1))
    return max(multiple, rows // multiple * multiple)


def _unpack_bits(bitmask: torch.Tensor) -> torch.Tensor:
    """uint8 (R, B) -> bool (R, 8B), bit j of byte b at column 8b + j."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(bitmask.shape[0], -1)


def csr_from_bitmask(where: str, compressed: torch.Tensor, bitmask: torch.Tensor, row_offsets: torch.Tensor,
                     shape: tuple[int, int], dtype: torch.dtype, bitmap: bool = False) -> CSRMatrix:
    """A CSRMatrix from sparse-bitmask tensors (checked: row offsets against the bitmask's row counts, the number
    of values, no bits past K). `bitmap` keeps the bitmask as the CSR bitmap (regrouped into int32 words)."""
    M, K = shape
    nnz = compressed.numel()
    idx = index_dtype_for(nnz, K, M)
    crow = torch.empty(M + 1, dtype=idx)
    crow[:M] = row_offsets
    crow[M] = nnz
    cdt = compact_col_dtype(K) or idx
    col = torch.empty(nnz, dtype=cdt)
    R = _row_block(K)
    for r0 in range(0, M, R):
        r1 = min(M, r0 + R)
        bits = _unpack_bits(bitmask[r0:r1])
        if bool(bits[:, K:].any()):
            fail(where, ValueError, f"bits set past column K = {K} in rows {r0}..{r1 - 1}")
        counts = bits.sum(1)
        if not torch.equal(counts.to(idx), crow[r0 + 1:r1 + 1] - crow[r0:r1]):
            r = r0 + int(torch.nonzero(counts.to(idx) != crow[r0 + 1:r1 + 1] - crow[r0:r1])[0])
            fail(where, ValueError, f"row {r} has {int(counts[r - r0])} bits set but row_offsets give it "
                                    f"{int(crow[r + 1] - crow[r])} values (row_offsets[0] = {int(crow[0])}, "
                                    f"{nnz} values in all)")
        col[int(crow[r0]):int(crow[r1])] = cols_to(bits.nonzero()[:, 1], cdt)
    if M and int(crow[0]) != 0:
        fail(where, ValueError, f"row_offsets[0] must be 0, got {int(crow[0])}")
    words = None
    if bitmap:
        W = bitmap_words(K)
        padded = torch.zeros(M, 4 * W, dtype=torch.uint8)
        padded[:, :bitmask.shape[1]] = bitmask
        words = padded.view(torch.int32) if sys.byteorder == "little" else bitmap_of(where, crow, col, K)
    return CSRMatrix(crow, col, compressed.to(dtype).contiguous(), (M, K), bitmap=words, validate=True)


def semi24_from_bitmask(where: str, compressed: torch.Tensor, bitmask: torch.Tensor, shape: tuple[int, int],
                        dtype: torch.dtype) -> Semi24Matrix:
    """A Semi24Matrix from sparse-24-bitmask tensors: every group of 4 must have exactly 2 bits set (what the
    writer produces); the metadata is built from the bitmask a block of 32-row tiles at a time."""
    M, K = shape
    G, Kp = K // 4, padded_k(K)
    metas = []
    R = _row_block(K, SEMI24_M_BLOCK)
    for r0 in range(0, M, R):
        r1 = min(M, r0 + R)
        b = bitmask[r0:r1].to(torch.int64)
        groups = torch.stack((b & 0xF, b >> 4), -1).reshape(r1 - r0, -1)
        if bool(groups[:, G:].any()):
            fail(where, ValueError, f"bits set past column K = {K} in rows {r0}..{r1 - 1}")
        nib = _NIBBLE_OF_MASK[groups[:, :G]]
        if bool((nib < 0).any()):
            r, q = (int(i) for i in (nib < 0).nonzero()[0])
            fail(where, ValueError, f"row {r0 + r}, group {q} (columns {4 * q}..{4 * q + 3}) has "
                                    f"{int(_POPCOUNT[groups[r, q]])} bits set, sparse-24-bitmask keeps exactly 2")
        full = torch.full((r1 - r0, Kp // 4), EMPTY_NIBBLE, dtype=torch.int64)
        full[:, :G] = nib
        metas.append(pack_metadata(full))
    metadata = torch.cat(metas) if metas else torch.zeros(0, Kp // 32, 32, dtype=torch.int32)
    values = torch.zeros(M, Kp // 2, dtype=dtype)
    values[:, :K // 2] = compressed
    return Semi24Matrix(values, metadata, (M, K), validate=True)


def csr_to_bitmask(A: CSRMatrix) -> dict[str, torch.Tensor]:
    """sparse-bitmask tensors of a CSRMatrix (its stored zeros dropped, as compressed-tensors' writer keeps only
    nonzeros)."""
    M, K = A.shape
    crow, col, val = A.crow_indices.long(), A.col_indices, A.values.detach()
    bitmap = A.bitmap
    zero = val == 0
    if bool(zero.any()):
        keep = ~zero
        rows = torch.repeat_interleave(torch.arange(M), crow.diff(), output_size=val.numel())
        crow = torch.zeros(M + 1, dtype=torch.int64)
        crow[1:] = torch.bincount(rows[keep], minlength=M).cumsum(0)
        col, val, bitmap = col[keep], val[keep], None
    if bitmap is None:
        bitmap = bitmap_of(_SAVE, crow.to(torch.int64), col.to(torch.int64) if col.dtype != torch.int16 else col, K)
    bytes_ = bitmap.contiguous().view(torch.uint8)[:, :-(-K // 8)].contiguous() if M else torch.zeros(0, -(-K // 8),
                                                                                                     dtype=torch.uint8)
    return {"compressed": val.contiguous(), "bitmask": bytes_, "row_offsets": crow[:-1].contiguous(),
            "shape": torch.tensor([M, K], dtype=torch.int64)}


def semi24_to_bitmask(A: Semi24Matrix) -> dict[str, torch.Tensor]:
    """sparse-24-bitmask tensors of a Semi24Matrix (K a multiple of 4): the two kept slots of every group, stored
    zeros included, as compressed-tensors keeps the top two of every group."""
    M, K = A.shape
    G = K // 4
    nib = unpack_metadata(A.metadata, M)[:, :G]
    colmask = (1 << (nib & 3)) | (1 << ((nib >> 2) & 3))
    if G % 2:
        colmask = torch.cat((colmask, torch.zeros(M, 1, dtype=colmask.dtype)), 1)
    bitmask = (colmask[:, 0::2] | (colmask[:, 1::2] << 4)).to(torch.uint8)
    return {"compressed": A.values.detach()[:, :K // 2].contiguous(), "bitmask": bitmask.contiguous(),
            "shape": torch.tensor([M, K], dtype=torch.int64).reshape(-1, 1)}


# ---------------------------------------------------------------------------------------------------- load


def _param_aliases(model: nn.Module) -> dict[str, list[tuple[str, nn.Module, str]]]:
    """state_dict key of every parameter and persistent buffer -> every (name, module, attribute) holding that
    tensor (tied weights: one entry, under the first name)."""
    first: dict[int, str] = {}
    out: dict[str, list[tuple[str, nn.Module, str]]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        tensors = list(mod._parameters.items()) + [(n, b) for n, b in mod._buffers.items()
                                                   if n not in mod._non_persistent_buffers_set]
        for n, t in tensors:
            if t is None:
                continue
            key = f"{mname}.{n}" if mname else n
            out.setdefault(first.setdefault(id(t), key), []).append((key, mod, n))
    return out


def load_compressed(model: nn.Module, path: str, *, strict: bool = True) -> nn.Module:
    """Loads the compressed-tensors checkpoint at `path` (a directory) into `model`, in place; returns `model`.

    Every target Linear of the checkpoint's sparsity_config becomes a SparseLinear: "sparse-bitmask" -> CSR,
    "sparse-24-bitmask" -> 2:4, built from the compressed tensors without a dense copy. Every other parameter and
    persistent buffer is loaded as stored, cast to the model's dtype (a model built under torch.device("meta")
    gets its tensors from the file, so only the checkpoint's tensors are ever allocated). Tied weights stay tied.
    A quantized or unknown format, a missing tensor, a shape mismatch, a corrupt or truncated file raise an error
    naming the file and tensor, and leave `model` as it was. `strict`: tensors of the checkpoint that the model
    has no place for are an error (otherwise ignored)."""
    from ..nn import SparseLinear
    from ..nn.auto import bitmap_for
    from ..nn._weight import SparseWeight

    if not isinstance(model, nn.Module):
        fail(_LOAD, TypeError, f"model must be an nn.Module, got {type(model).__name__}")
    if not os.path.isdir(path):
        fail(_LOAD, FileNotFoundError, f"{path} is not a directory")
    sc = read_sparsity_config(path)
    ckpt = _Checkpoint(path)
    fmt = sc["format"]
    modules = dict(model.named_modules())
    suffixes = ("compressed", "bitmask", "shape") + (("row_offsets",) if fmt == "sparse-bitmask" else ())
    targets = [] if fmt == "dense" else target_names(model, sc["targets"], sc["ignore"])
    in_file = {k.rpartition(".")[0] for k in ckpt.header if k.endswith(".compressed")}
    stray = sorted(in_file - set(targets))
    if stray:
        fail(_LOAD, ValueError, f"{ckpt.where[stray[0] + '.compressed']}: '{stray[0]}.compressed' is stored "
                                f"compressed, but {sc['file']}'s targets {sc['targets']} / ignore {sc['ignore']} do "
                                "not select that module")
    used: set[str] = set()

    def need(key: str, what: str) -> tuple[tuple[int, ...], torch.dtype]:
        if key not in ckpt.header:
            fail(_LOAD, KeyError, f"{path}: tensor '{key}' ({what}) is missing from the checkpoint")
        used.add(key)
        return ckpt.header[key]

    # 1. Every check that needs no data: which tensors exist, their shapes and dtypes.
    plan = {}
    for name in targets:
        mod = modules[name]
        if not isinstance(mod, (nn.Linear, SparseLinear)):
            fail(_LOAD, TypeError, f"{sc['file']}: target '{name}' is a {type(mod).__name__}; sparsekern loads "
                                   "compressed Linear layers only")
        M, K = mod.out_features, mod.in_features
        hdr = {s: need(f"{name}.{s}", f"the {fmt} {s} of {name}") for s in suffixes}
        want = {"bitmask": (M, -(-K // 8)), "row_offsets": (M,), "shape": None,
                "compressed": (M, K // 2) if fmt == "sparse-24-bitmask" else None}
        dtypes = {"bitmask": (torch.uint8,), "compressed": _FLOATS, "shape": _INTS, "row_offsets": _INTS}
        for s in suffixes:
            shape, dtype = hdr[s]
            key = f"{name}.{s}"
            if dtype not in dtypes[s]:
                fail(_LOAD, TypeError, f"{ckpt.where[key]}: tensor '{key}' is {dtype}, expected one of {dtypes[s]}")
            if want[s] is not None and shape != want[s]:
                fail(_LOAD, ValueError, f"{ckpt.where[key]}: tensor '{key}' has shape {shape}; the model's {name} "
                                        f"is ({M}, {K}), which needs {want[s]}")
        if fmt == "sparse-bitmask" and len(hdr["compressed"][0]) != 1:
            key = f"{name}.compressed"
            fail(_LOAD, ValueError, f"{ckpt.where[key]}: tensor '{key}' must be 1-D, got {hdr['compressed'][0]}")
        if fmt == "sparse-24-bitmask" and K % 4:
            fail(_LOAD, ValueError, f"{sc['file']}: 2:4 target {name} has in_features {K}, not a multiple of 4")
        plan[name] = (M, K)
    dense = {}
    for key, holders in _param_aliases(model).items():
        names = [n for n, _, _ in holders]
        mname, _, attr = key.rpartition(".")
        mod = holders[0][1]
        if isinstance(mod, SparseWeight) and mname not in plan:
            fail(_LOAD, TypeError, f"'{mname}' is a {type(mod).__name__} that the checkpoint does not target; load "
                                   "into a model whose other layers are dense (sparsekern.densify_)")
        if mname in plan and (attr == "weight" or attr.startswith("weight_")):
            continue
        present = [n for n in names if n in ckpt.header]
        if not present:
            fail(_LOAD, KeyError, f"{path}: tensor '{key}' is missing from the checkpoint")
        found = present[0]
        used.update(present)  # a tied tensor stored under several names is read once
        shape, _ = need(found, key)
        want = tuple(getattr(mod, attr).shape)
        if shape != want:
            fail(_LOAD, ValueError, f"{ckpt.where[found]}: tensor '{found}' has shape {shape}, the model's {key} is "
                                    f"{want}")
        dense[key] = (found, holders)
    if strict:
        unused = sorted(set(ckpt.header) - used)
        if unused:
            fail(_LOAD, ValueError, f"{ckpt.where[unused[0]]}: tensor '{unused[0]}' has no place in the model "
                                    f"({len(unused)} such; pass strict=False to ignore them)")

    # 2. Read and build (still without touching the model).
    new_layers = {}
    for name, (M, K) in plan.items():
        mod = modules[name]
        w = mod.weight_values if isinstance(mod, SparseLinear) else mod.weight
        dtype, dev = w.dtype, (torch.device("cpu") if w.is_meta else w.device)
        t = {s: ckpt.get(f"{name}.{s}") for s in suffixes}
        where = f"{_LOAD}: {ckpt.where[name + '.compressed']}: layer '{name}'"
        stored = tuple(int(v) for v in t["shape"].flatten().tolist())
        if stored != (M, K):
            fail(where, ValueError, f"tensor '{name}.shape' says {stored}, the model's layer is ({M}, {K})")
        try:
            if fmt == "sparse-bitmask":
                nnz = t["compressed"].numel()
                A = csr_from_bitmask(where, t["compressed"], t["bitmask"], t["row_offsets"], (M, K), dtype,
                                     bitmap=bitmap_for(nnz / max(M * K, 1), dtype, dev))
            else:
                A = semi24_from_bitmask(where, t["compressed"], t["bitmask"], (M, K), dtype)
        except (ValueError, IndexError, TypeError) as e:
            msg = str(e)
            fail(_LOAD, type(e), msg if msg.startswith(_LOAD) else f"{where}: {msg}")
        del t
        new_layers[name] = A
    loaded = {}
    for key, (found, holders) in dense.items():
        loaded[key] = ckpt.get(found)
    # 3. Commit: nothing below can fail on the checkpoint's contents.
    device = None
    for key, (found, holders) in dense.items():
        _, mod0, attr0 = holders[0]
        old = getattr(mod0, attr0)
        device = old.device if old.device.type != "meta" else device
        new = loaded.pop(key).to(dtype=old.dtype, device=None if old.device.type == "meta" else old.device)
        if isinstance(old, nn.Parameter):
            new = nn.Parameter(new, requires_grad=old.requires_grad)
        for _, mod, attr in holders:
            (mod._parameters if attr in mod._parameters else mod._buffers)[attr] = new
    for name, A in new_layers.items():
        mod = modules[name]
        bias = mod.bias
        if device is not None:
            A = A.to(device)
        new = SparseLinear(A, None)
        new.bias = bias  # the loaded Parameter, not a copy
        new.train(mod.training)
        _replace(model, name, new)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


# ---------------------------------------------------------------------------------------------------- save


def _parse_size(size) -> int | None:
    if size is None or isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", str(size).upper())
    if not m:
        fail(_SAVE, ValueError, f"max_shard_size must be an int (bytes) or like '5GB', got {size!r}")
    return int(float(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2)])


def compressed_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, sparsity_config) that save_compressed writes: every sparse SparseLinear compressed (all 2:4 ->
    "sparse-24-bitmask", else "sparse-bitmask"), every other parameter and persistent buffer as it is (a
    SparseLinear / SparseConv2d held dense, or a BSR layer's pattern, under its dense `weight` name), tied
    tensors once under their first name."""
    from ..nn import SparseConv2d, SparseLinear
    from ..nn._weight import SparseWeight

    modules = dict(model.named_modules())
    sparse = {n: m for n, m in modules.items() if isinstance(m, SparseLinear) and m.format != "dense"}
    bad = [n for n, m in modules.items() if isinstance(m, SparseWeight) and not isinstance(m, (SparseLinear,
                                                                                               SparseConv2d))]
    if bad:
        fail(_SAVE, TypeError, f"{bad[0]} is a {type(modules[bad[0]]).__name__}, which has no compressed layout")
    all24 = bool(sparse) and all(m.format == "2:4" and m.in_features % 4 == 0 for m in sparse.values())
    fmt = "sparse-24-bitmask" if all24 else "sparse-bitmask"
    tensors: dict[str, torch.Tensor] = {}
    zeros = total = 0
    for key, holders in _param_aliases(model).items():
        mname, _, attr = key.rpartition(".")
        mod = holders[0][1]
        if isinstance(mod, SparseWeight) and attr.startswith("weight_"):
            if attr != "weight_values":
                continue
            if mname in sparse:
                A = mod.matrix()
                if fmt == "sparse-24-bitmask":
                    comps = semi24_to_bitmask(A)
                else:
                    if not isinstance(A, CSRMatrix):
                        # BSR blocks and 2:4 groups: re-indexed as CSR one layer at a time (a dense copy of this
                        # one layer, at save time only).
                        A = CSRMatrix.from_dense(A.to_dense().detach())
                    comps = csr_to_bitmask(A)
                for s, t in comps.items():
                    tensors[f"{mname}.{s}"] = t
                zeros += mod.in_features * mod.out_features - int((mod.weight_values != 0).sum())
                total += mod.in_features * mod.out_features
                continue
            tensors[f"{mname}.weight"] = mod.weight.detach()
            continue
        t = getattr(mod, attr).detach()
        if isinstance(mod, nn.Linear) and attr == "weight":
            zeros += int((t == 0).sum())
            total += t.numel()
        tensors[key] = t
    ignore = [n for n, m in modules.items() if isinstance(m, (nn.Linear, SparseLinear)) and n not in sparse]
    config = {"format": fmt, "targets": ["Linear"], "ignore": ignore,
              "global_sparsity": zeros / total if total else 0.0,
              "sparsity_structure": "2:4" if all24 else "unstructured", "registry_requires_subclass": False}
    return tensors, config


def save_compressed(model: nn.Module, path: str, *, max_shard_size="5GB", config: dict | None = None) -> None:
    """Writes `model` to the directory `path` in compressed-tensors' layout: `model.safetensors` (or shards of at
    most `max_shard_size` with `model.safetensors.index.json`) and `config.json` (the model's Hugging Face config,
    or `config`, with `quantization_config.sparsity_config`). Sparse SparseLinear layers are written as
    "sparse-24-bitmask" when every one is 2:4, else as "sparse-bitmask"; compressed-tensors' decompressor, vLLM and
    sparsekern.load_compressed read it back."""
    _require_safetensors(_SAVE)
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        fail(_SAVE, TypeError, f"model must be an nn.Module, got {type(model).__name__}")
    limit = _parse_size(max_shard_size)
    tensors, sparsity = compressed_state_dict(model)
    seen: set[int] = set()
    for k, t in tensors.items():  # safetensors refuses tensors sharing storage
        t = t.to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if limit and shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(path):  # stale shards of an earlier save would be read as part of this one
        if old.endswith(".safetensors") or old == INDEX_NAME:
            os.remove(os.path.join(path, old))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        with open(os.path.join(path, INDEX_NAME), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    if config is None:
        hf_config = getattr(model, "config", None)
        config = hf_config.to_dict() if hasattr(hf_config, "to_dict") else {}
    config = dict(config)
    config["quantization_config"] = {"quant_method": "compressed-tensors", "version": CT_VERSION,
                                     "sparsity_config": sparsity, "transform_config": {}}
    with open(os.path.join(path, CONFIG_NAME), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, default=str)

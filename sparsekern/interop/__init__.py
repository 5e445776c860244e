"""Interoperability with the field's checkpoints and models: compressed-tensors sparse checkpoints (safetensors,
as llm-compressor publishes and vLLM loads them) and Hugging Face transformers helpers (hf.from_compressed). The
optional packages (safetensors, transformers: `pip install sparsekern[hf]`) are imported only inside the functions
that use them."""

from . import hf
from .compressed_tensors import load_compressed, save_compressed

__all__ = ["hf", "load_compressed", "save_compressed"]

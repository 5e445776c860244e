"""Interoperability with the field's checkpoints and models: compressed-tensors sparse checkpoints (safetensors,
as llm-compressor publishes and vLLM loads them) and Hugging Face transformers helpers. The optional packages
(safetensors, transformers: `pip install sparsekern[hf]`) are imported only inside the functions that use them."""

from .compressed_tensors import load_compressed, save_compressed

__all__ = ["load_compressed", "save_compressed"]

"""Triton GPU kernels. Imported lazily (on first GPU call or by tests), never by `import sparsekern`."""

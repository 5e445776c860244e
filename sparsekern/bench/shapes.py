"""Named benchmark presets: (M, K) weight shapes of real layers, sparsities, batch sizes N, dtypes."""

import torch

PRESETS = {
    # The CPU default: one LLM-sized square layer across the sparsity range, decode to prefill batch.
    "cpu": dict(shapes=[(4096, 4096)], sparsities=[0.5, 0.7, 0.8, 0.9, 0.95], ns=[1, 16, 64, 256],
                dtypes=[torch.float32]),
    # The GPU default: Llama-7B-like projections (square, up, down).
    "gpu": dict(shapes=[(4096, 4096), (11008, 4096), (4096, 11008)], sparsities=[0.5, 0.7, 0.8, 0.9, 0.95],
                ns=[1, 16, 128, 1024], dtypes=[torch.float16, torch.bfloat16]),
    # 2:4 on a GPU (issue 5): decode to prefill, Llama-7B up projection and a large square layer.
    "semi24": dict(shapes=[(4096, 4096), (11008, 4096), (8192, 8192)], sparsities=[0.5],
                   ns=[1, 8, 16, 64, 256, 1024, 8192], dtypes=[torch.float16, torch.bfloat16]),
    # Kernel tuning on the GPU (with --variants): the decode and prefill regimes of one square and one tall layer.
    "gpu-tune": dict(shapes=[(4096, 4096), (11008, 4096)], sparsities=[0.7, 0.9], ns=[1, 4, 16, 128, 1024],
                     dtypes=[torch.float16]),
    # Block sparsity on a GPU (issue 4): blocks 16/32/64 against cuBLAS and torch's BSR kernel, decode to prefill.
    "bsr": dict(shapes=[(4096, 4096), (11008, 4096)], sparsities=[0.5, 0.8, 0.9, 0.95], ns=[1, 16, 128, 4096],
                dtypes=[torch.float16, torch.bfloat16], blocksizes=[(16, 16), (32, 32), (64, 64)]),
    # Sparse convolutions as the modules layer runs them on a CPU: csr_mm(W (Cout, Cin*k*k), X (Cin*k*k, H*W)),
    # ResNet-50 layers at 224x224, batch 1 (N = H*W from 3136 down to 49), 80% sparsity (issue 13).
    "conv": dict(shapes=[(256, 64), (64, 576), (128, 1152), (512, 4608)], sparsities=[0.8],
                 ns=[49, 196, 784, 3136], dtypes=[torch.float32]),
    # A few seconds anywhere: checks that the harness runs end to end.
    "quick": dict(shapes=[(256, 512)], sparsities=[0.9], ns=[1, 32], dtypes=[torch.float32]),
}

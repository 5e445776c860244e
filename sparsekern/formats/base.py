"""What every format shares: a logical (M, K) shape and float data in `values`, whose dtype and device are the
matrix's."""

import torch


class SparseMatrix:
    shape: tuple[int, int]
    values: torch.Tensor

    @property
    def nnz(self) -> int:
        """Stored elements (a format may count differently and says so)."""
        return self.values.numel()

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

"""Fixed-size list columns of a stored data set as tensors (the layout every task writes)."""

from __future__ import annotations

import pyarrow as pa
import torch


def tensors(table: pa.Table, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Each named column as a tensor of shape (rows, *shape)."""
    found = {}
    for name, shape in shapes.items():
        values = table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)
        found[name] = torch.from_numpy(values.reshape(table.num_rows, *shape).copy())
    return found

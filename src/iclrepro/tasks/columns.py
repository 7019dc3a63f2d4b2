"""Fixed-size list columns of a stored data set as tensors (the layout every task writes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch


def tensors(table: pa.Table, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Each named column as a tensor of shape (rows, *shape), filled chunk by chunk: joining the
    chunks first would copy the column once more."""
    found = {}
    for name, shape in shapes.items():
        column = table.column(name)
        values = np.empty((table.num_rows, *shape), dtype=column.type.value_type.to_pandas_dtype())
        start = 0
        for chunk in column.chunks:
            values[start:start + len(chunk)] = chunk.flatten().to_numpy().reshape(len(chunk), *shape)
            start += len(chunk)
        found[name] = torch.from_numpy(values)
    return found

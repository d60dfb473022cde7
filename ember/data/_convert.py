"""Blocks handed over in other shapes: ObjectRefs of NumPy or pandas batches (converted where
the blocks are, in tasks), and a torch ``IterableDataset`` of ``(features, label)`` tensors
(Ray 2.5's ``to_torch``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ember
from ember.data import _block
from ember.data._block import Block


@ember.remote
def block_to_numpy(block: Block, column: str | None) -> Any:
    """The block as ``{column: ndarray}``, or one column's ndarray."""
    if column is None:
        return _block.block_to_batch(block, "numpy")
    if column not in block.column_names:
        raise ValueError(f"to_numpy_refs(column={column!r}): no such column; the dataset has "
                         f"{block.column_names}")
    return _block.column_to_numpy(block.column(column))


@ember.remote
def block_to_pandas(block: Block) -> Any:
    return block.to_pandas()


def _tensor(batch: dict[str, Any], columns: list[str], dtype: Any, unsqueeze: bool) -> Any:
    """``columns`` of ``batch`` side by side in one tensor: ``(N, len(columns))`` for scalar
    columns (``(N,)`` for one column when not ``unsqueeze``)."""
    import torch

    missing = [c for c in columns if c not in batch]
    if missing:
        raise ValueError(f"to_torch: columns {missing} not found; the dataset has "
                         f"{list(batch)}")
    tensors = []
    for column in columns:
        array = batch[column]
        if array.dtype == object:
            raise TypeError(f"to_torch: column {column!r} holds Python objects, which torch "
                            "cannot hold; leave it out of feature_columns")
        tensor = torch.as_tensor(array, dtype=dtype)
        tensors.append(tensor.unsqueeze(1) if unsqueeze and tensor.ndim == 1 else tensor)
    if len(tensors) == 1:
        return tensors[0]
    if all(t.ndim == 1 for t in tensors):
        return torch.stack(tensors, dim=1)
    return torch.cat(tensors, dim=1)


def features_and_label(label_column: str | None, feature_columns: Any,
                       label_column_dtype: Any, feature_column_dtypes: Any,
                       unsqueeze_label_tensor: bool, unsqueeze_feature_tensors: bool
                       ) -> Callable[[dict[str, Any]], tuple[Any, Any]]:
    """The conversion of a NumPy batch into Ray's ``(features, label)``: ``feature_columns``
    a list of names (one tensor), a list of lists (a list of tensors) or a dict of lists (a
    dict of tensors); ``None``: every column but the label, as one tensor."""
    if isinstance(feature_columns, (list, tuple)) and feature_columns and all(
            isinstance(c, (list, tuple)) for c in feature_columns):
        groups: Any = [list(c) for c in feature_columns]
        dtypes: Any = (list(feature_column_dtypes) if isinstance(
            feature_column_dtypes, (list, tuple)) else [feature_column_dtypes] * len(groups))
        if len(dtypes) != len(groups):
            raise ValueError(f"to_torch: feature_column_dtypes has {len(dtypes)} entries for "
                             f"{len(groups)} groups of feature_columns")
    elif isinstance(feature_columns, dict):
        groups = {k: list(v) for k, v in feature_columns.items()}
        dtypes = (dict(feature_column_dtypes) if isinstance(feature_column_dtypes, dict)
                  else dict.fromkeys(groups, feature_column_dtypes))
    elif feature_columns is None or (isinstance(feature_columns, (list, tuple)) and all(
            isinstance(c, str) for c in feature_columns)):
        groups = None if feature_columns is None else list(feature_columns)
        dtypes = feature_column_dtypes
    else:
        raise TypeError(f"to_torch: feature_columns={feature_columns!r} must be a list of "
                        "column names, a list of such lists, or a dict of such lists")

    def convert(batch: dict[str, Any]) -> tuple[Any, Any]:
        label = None
        if label_column is not None:
            label = _tensor(batch, [label_column], label_column_dtype, unsqueeze_label_tensor)
        u = unsqueeze_feature_tensors
        if groups is None:
            features = _tensor(batch, [c for c in batch if c != label_column], dtypes, u)
        elif isinstance(groups, dict):
            features = {k: _tensor(batch, cols, dtypes.get(k), u) for k, cols in groups.items()}
        elif groups and isinstance(groups[0], list):
            features = [_tensor(batch, cols, dt, u) for cols, dt in zip(groups, dtypes,
                                                                          strict=True)]
        else:
            features = _tensor(batch, groups, dtypes, u)
        return features, label

    return convert


def torch_dataset(batches: Callable[[], Iterator[dict[str, Any]]],
                  convert: Callable[[dict[str, Any]], tuple[Any, Any]]) -> Any:
    """A ``torch.utils.data.IterableDataset`` whose every iteration converts ``batches()``."""
    import torch.utils.data

    class _TorchIterable(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        """Ray's ``to_torch`` dataset: ``(features, label)`` per batch; iterate it directly
        (each iteration runs the dataset again)."""

        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            for batch in batches():
                yield convert(batch)

    return _TorchIterable()

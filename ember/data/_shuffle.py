"""Barrier operations over materialized blocks, as core tasks: sort (range partitioning),
random shuffle, repartition, zip, and the per-partition step of groupby."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import ember
from ember.data import _block
from ember.data._block import Block
from ember.data._plan import BlockMeta, Bundle


def _meta(block: Block) -> dict[str, int]:
    return {"rows": block.num_rows, "bytes": _block.size_bytes(block)}


def _bundles(pairs: list[tuple[Any, Any]]) -> list[Bundle]:
    metas = ember.get([m for _, m in pairs]) if pairs else []
    return [Bundle(ref, BlockMeta(m["rows"], m["bytes"]), (i,))
            for i, ((ref, _), m) in enumerate(zip(pairs, metas, strict=True))]


# -- tasks --------------------------------------------------------------------------------------
@ember.remote
def _sample(block: Block, key: str, k: int) -> np.ndarray:
    if block.num_rows == 0:
        return np.array([])
    column = _block.column_to_numpy(block.column(key))
    idx = np.linspace(0, len(column) - 1, num=min(k, len(column))).astype(int)
    sample: np.ndarray = np.sort(column)[idx]
    return sample


@ember.remote
def _partition(block: Block, mode: str, key: str | None, boundaries: Any, n: int,
               seed: int | None) -> Any:
    if block.num_rows == 0:
        parts = [block] * n
    elif mode == "range":
        column = _block.column_to_numpy(block.column(key))
        target = np.searchsorted(boundaries, column, side="left")
        parts = [block.filter(pa.array(target == i)) for i in range(n)]
    else:  # random
        rng = np.random.default_rng(seed)
        target = rng.integers(0, n, size=block.num_rows)
        parts = [block.filter(pa.array(target == i)) for i in range(n)]
    return parts[0] if n == 1 else tuple(parts)


@ember.remote(num_returns=2)
def _reduce(finish: Callable[[Block], Block], *parts: Block) -> tuple[Block, dict[str, int]]:
    block = finish(_block.concat(list(parts)))
    return block, _meta(block)


@ember.remote(num_returns=2)
def _slice_concat(spans: list[tuple[int, int]], *blocks: Block) -> tuple[Block, dict[str, int]]:
    block = _block.concat([b.slice(a, n) for b, (a, n) in zip(blocks, spans, strict=True)])
    return block, _meta(block)


@ember.remote(num_returns=2)
def _zip_blocks(left: Block, right: Block) -> tuple[Block, dict[str, int]]:
    out = left
    for name in right.column_names:
        new = name
        suffix = 1
        while new in out.column_names:
            new = f"{name}_{suffix}"
            suffix += 1
        out = out.append_column(new, right.column(name))
    return out, _meta(out)


# -- driver-side plans ----------------------------------------------------------------------------
def _exchange(bundles: list[Bundle], mode: str, key: str | None, boundaries: Any, n: int,
              seed: int | None, finish: Callable[[Block], Block]) -> list[Bundle]:
    if not bundles:
        return []
    parts = []
    for i, b in enumerate(bundles):
        out = _partition.options(num_returns=n).remote(
            b.ref, mode, key, boundaries, n, None if seed is None else seed + i)
        parts.append([out] if n == 1 else list(out))
    return _bundles([_reduce.remote(finish, *[p[j] for p in parts]) for j in range(n)])


def sort(bundles: list[Bundle], key: str, descending: bool) -> list[Bundle]:
    n = max(1, len(bundles))
    nonempty = [b for b in bundles if b.meta.num_rows]
    if not nonempty:
        return bundles
    samples = np.concatenate(ember.get([_sample.remote(b.ref, key, 20) for b in nonempty]))
    quantiles = np.quantile(np.arange(len(samples)), np.linspace(0, 1, n + 1)[1:-1]).astype(int)
    boundaries = np.unique(np.sort(samples)[quantiles]) if len(samples) else np.array([])
    parts = len(boundaries) + 1
    order = "descending" if descending else "ascending"

    def finish(block: Block) -> Block:
        return block.sort_by([(key, order)]) if block.num_rows else block

    out = _exchange(bundles, "range", key, boundaries, parts, None, finish)
    return out[::-1] if descending else out


def random_shuffle(bundles: list[Bundle], seed: int | None, num_blocks: int | None
                   ) -> list[Bundle]:
    n = num_blocks or max(1, len(bundles))
    base = seed if seed is not None else int(np.random.default_rng().integers(2**31))

    def finish(block: Block) -> Block:
        if block.num_rows == 0:
            return block
        rng = np.random.default_rng(base + block.num_rows)
        return block.take(pa.array(rng.permutation(block.num_rows)))

    return _exchange(bundles, "random", None, None, n, base, finish)


def row_spans(bundles: list[Bundle], sizes: list[int]) -> list[list[tuple[int, int, int]]]:
    """For each output size, the (bundle index, offset, rows) pieces that make it up. Pure."""
    out: list[list[tuple[int, int, int]]] = []
    index, offset = 0, 0
    for size in sizes:
        pieces: list[tuple[int, int, int]] = []
        need = size
        while need > 0 and index < len(bundles):
            avail = bundles[index].meta.num_rows - offset
            take = min(avail, need)
            if take > 0:
                pieces.append((index, offset, take))
            need -= take
            offset += take
            if offset >= bundles[index].meta.num_rows:
                index, offset = index + 1, 0
        out.append(pieces)
    return out


def resize(bundles: list[Bundle], sizes: list[int]) -> list[Bundle]:
    pairs = []
    for pieces in row_spans(bundles, sizes):
        refs = [bundles[i].ref for i, _, _ in pieces]
        pairs.append(_slice_concat.remote([(a, n) for _, a, n in pieces], *refs))
    return _bundles(pairs)


def repartition(bundles: list[Bundle], n: int) -> list[Bundle]:
    total = sum(b.meta.num_rows for b in bundles)
    sizes = [total * (i + 1) // n - total * i // n for i in range(n)]
    return resize(bundles, sizes)


def zip_datasets(left: list[Bundle], right: list[Bundle]) -> list[Bundle]:
    left_rows = sum(b.meta.num_rows for b in left)
    right_rows = sum(b.meta.num_rows for b in right)
    if left_rows != right_rows:
        raise ValueError(
            f"zip needs datasets with the same number of rows, got {left_rows} and {right_rows}"
        )
    aligned = resize(right, [b.meta.num_rows for b in left])
    return _bundles([_zip_blocks.remote(a.ref, b.ref) for a, b in zip(left, aligned, strict=True)])


def group_partitions(bundles: list[Bundle], key: str | None) -> list[Bundle]:
    """Blocks in which every key value lives in exactly one block, sorted by key."""
    if key is None:
        return repartition(bundles, 1) if bundles else bundles
    return sort(bundles, key, descending=False)


def aggregate_block(block: Block, key: str | None, aggs: list[tuple[str, str, Any, str]]
                    ) -> Block:
    """Aggregate one partition: ``aggs`` are (column, pyarrow function, options, output name)."""
    if block.num_rows == 0 and key is not None:
        return block.slice(0, 0).select([key])
    specs = [(col, fn, pc.VarianceOptions(ddof=opts) if fn == "stddev" else opts)
             for col, fn, opts, _ in aggs]
    names = [name for *_, name in aggs]
    if key is None:
        row = {}
        for (col, fn, opts), name in zip(specs, names, strict=True):
            if fn == "count":
                row[name] = [block.num_rows]
            else:
                row[name] = [getattr(pc, fn)(block.column(col), options=opts).as_py()]
        return pa.table(row)
    grouped = block.group_by(key).aggregate(
        [(col if fn != "count" else key, fn, opts) for col, fn, opts in specs]
    )
    produced = [c for c in grouped.column_names if c != key]
    grouped = grouped.select([key, *produced]).rename_columns([key, *names])
    return grouped.sort_by(key)

"""``DataContext`` configured the way Ray programs configure ``ray.data.DataContext``: by assigning
to the current context and to its ``execution_options``, with the effects a user sees."""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ember.data as ed
from ember.errors import ResourceError


@pytest.fixture(autouse=True)
def _fresh_context() -> Iterator[ed.DataContext]:
    ed.DataContext.set_current(ed.DataContext(enable_progress_bars=False))
    try:
        yield ed.DataContext.get_current()
    finally:
        ed.DataContext.set_current(ed.DataContext())


def _first_block_is_slow(batch: dict[str, Any]) -> dict[str, Any]:
    if batch["id"][0] == 0:
        time.sleep(0.5)
    return batch


class _Identity:
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


def test_ray_style_assignments_change_the_current_context(_fresh_context: ed.DataContext) -> None:
    ctx = ed.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ctx.execution_options.resource_limits.object_store_memory = 2e9
    ctx.execution_options.resource_limits.cpu = 1
    ctx.execution_options.verbose_progress = False
    ctx.target_max_block_size = 64 * 1024 * 1024
    ctx.use_push_based_shuffle = False
    now = ed.context.DataContext.get_current()
    assert now is ctx and now.preserve_order and now.execution_options.resource_limits.cpu == 1
    # ember's own ways keep working beside them, and copies share nothing with the original.
    assert ed.DataContext.update(max_parallelism=8).max_parallelism == 8
    changed = dataclasses.replace(ed.DataContext.get_current(), preserve_order=False)
    assert not changed.preserve_order and ed.DataContext.get_current().preserve_order
    ctx.preserve_order = False  # either spelling sets the one setting
    assert ctx.execution_options.preserve_order is False
    ctx.execution_options = ed.ExecutionOptions(preserve_order=True)
    assert ctx.preserve_order is True


def test_a_bad_value_fails_at_its_assignment(_fresh_context: ed.DataContext) -> None:
    ctx = _fresh_context
    with pytest.raises(ValueError, match=r"memory_budget_bytes=0 must be > 0"):
        ctx.memory_budget_bytes = 0
    with pytest.raises(ValueError, match=r"excluded_cpus=-1 must be >= 0"):
        ctx.excluded_cpus = -1
    with pytest.raises(ValueError, match=r"actor_block_retries=True must be an int >= 0"):
        ctx.actor_block_retries = True
    with pytest.raises(ValueError, match=r"max_parallelism=0 must be >= 1"):
        ctx.max_parallelism = 0
    with pytest.raises(ValueError, match=r"ExecutionResources.cpu=-2 must be a number >= 0"):
        ctx.execution_options.resource_limits.cpu = -2
    with pytest.raises(TypeError, match=r"takes an ExecutionResources, got dict"):
        ctx.execution_options.resource_limits = {"cpu": 1}  # type: ignore[assignment]
    assert ctx == ed.DataContext(enable_progress_bars=False)  # nothing was changed


def test_a_misspelt_name_is_an_attribute_error_that_says_what_was_meant(
        _fresh_context: ed.DataContext) -> None:
    with pytest.raises(AttributeError, match=r"'enable_progess_bars'.*did you mean "
                                             r"'enable_progress_bars'"):
        _fresh_context.enable_progess_bars = False
    with pytest.raises(AttributeError, match=r"did you mean 'preserve_order'"):
        _fresh_context.execution_options.preserve_ordre = True
    with pytest.raises(AttributeError, match=r"did you mean 'max_errored_blocks'"):
        _ = _fresh_context.max_erored_blocks


def test_rays_other_fields_read_rays_defaults_and_say_once_that_they_do_nothing(
        _fresh_context: ed.DataContext, caplog: pytest.LogCaptureFixture) -> None:
    ctx = _fresh_context
    assert (ctx.max_errored_blocks, ctx.use_push_based_shuffle, ctx.use_streaming_executor,
            ctx.scheduling_strategy, ctx.target_min_block_size) == (0, False, True, "SPREAD",
                                                                    1024 * 1024)
    ctx.target_min_block_size = 4096  # Ray's name of ember's target_min_block_bytes
    assert ctx.target_min_block_bytes == 4096
    with caplog.at_level(logging.INFO, logger="ember.data"):
        ctx.max_errored_blocks = 5
        ctx.max_errored_blocks = 6
        ctx.use_streaming_executor = True  # Ray's default: nothing to say
    assert ctx.max_errored_blocks == 6
    said = [r.getMessage() for r in caplog.records if "max_errored_blocks" in r.getMessage()]
    assert len(said) == 1 and "has no effect in ember" in said[0]
    assert not [r for r in caplog.records if "use_streaming_executor" in r.getMessage()]


def test_preserve_order_set_through_execution_options_orders_the_rows(ember_local: Any) -> None:
    ed.DataContext.get_current().execution_options.preserve_order = True
    ds = ed.range(40, override_num_blocks=4).map_batches(_first_block_is_slow)
    assert [r["id"] for r in ds.take_all()] == list(range(40))


def test_a_change_made_while_iterating_reaches_the_next_execution_only(
        ember_local: Any) -> None:
    ctx = ed.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ed.range(40, override_num_blocks=4).map_batches(_first_block_is_slow)
    rows = ds.iter_rows()
    seen = [next(rows)["id"]]
    ctx.execution_options.preserve_order = False
    seen += [r["id"] for r in rows]
    assert seen == list(range(40))
    assert sorted(r["id"] for r in ds.take_all()) == list(range(40))


def test_resource_limits_cpu_runs_one_task_at_a_time(ember_local: Any) -> None:
    def spans(batch: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        time.sleep(0.3)
        return {"start": [start], "end": [time.monotonic()]}

    ed.DataContext.get_current().execution_options.resource_limits.cpu = 1
    rows = sorted(ed.range(4, override_num_blocks=4).map_batches(spans).take_all(),
                  key=lambda r: r["start"])
    assert len(rows) == 4
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(rows)), rows


@pytest.mark.parametrize("ember_local", [{"object_store_memory": 96 * 2**20}], indirect=True)
def test_resource_limits_object_store_memory_caps_the_memory_budget(ember_local: Any) -> None:
    ed.DataContext.get_current().execution_options.resource_limits.object_store_memory = 2**20
    ds = ed.range(1000).map_batches(lambda b: b)
    assert ds.count() == 1000
    assert ds.stats().memory_budget_bytes == 2**20
    assert "of a 1.0 MiB budget" in str(ds.stats())


def test_exclude_resources_cpu_is_excluded_cpus(ember_local: Any) -> None:
    ed.DataContext.get_current().execution_options.exclude_resources.cpu = 2
    assert ed.DataContext.get_current().excluded_cpus == 2
    assert ed.range(100, parallelism=4).map_batches(lambda b: b).count() == 100
    with pytest.raises(ResourceError, match=r"CPU=0 \(CPUs per node: 0; 2 held for other"):
        ed.range(10).map_batches(_Identity, compute=ed.ActorPoolStrategy(size=1)).count()


def test_target_max_block_size_splits_reads_into_smaller_blocks(ember_local: Any) -> None:
    ed.DataContext.get_current().target_max_block_size = 800  # 100 rows of int64
    sizes = [len(b["id"]) for b in ed.range(1000).iter_batches(batch_size=None)]
    assert sum(sizes) == 1000 and max(sizes) <= 100


def test_verbose_progress_false_shows_only_the_output_operators_bar(
        ember_local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    ctx = ed.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.execution_options.verbose_progress = False
    monkeypatch.setattr(sys, "stderr", Terminal())
    ds = ed.range(100).map(lambda r: r, num_cpus=0.5).map_batches(lambda b: b)
    assert len(ds.take_all()) == 100
    shown = sys.stderr.getvalue()
    assert "MapBatches" in shown and "Map(" not in shown and "Range" not in shown, shown


def test_resource_limits_gpu_below_a_tasks_gpus_fails_at_once_naming_the_limit(
        ember_local: Any) -> None:
    ed.DataContext.get_current().execution_options.resource_limits.gpu = 0.5
    with pytest.raises(ResourceError, match=r"GPU=1, but DataContext.execution_options."
                                            r"resource_limits.gpu=0.5"):
        ed.range(4).map_batches(lambda b: b, num_gpus=1).count()

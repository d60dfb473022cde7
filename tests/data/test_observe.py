"""The dashboard's ``"data"`` view of a dataset run: its operators' progress while it streams,
and their totals when it is done."""

from __future__ import annotations

import ember
from ember.dashboard import _server
from ember.testing import eventually


def test_a_dataset_shows_its_operators_while_running_and_when_done(ember_local):
    def double(batch):
        return {"id": batch["id"] * 2}

    service = _server.current()
    assert service is not None
    before = set(service.views("data"))
    stream = ember.data.range(1000, parallelism=10).map_batches(double, batch_size=100)
    batches = stream.iter_batches(batch_size=100)
    next(batches)

    def the_run():
        found = set(service.views("data")) - before
        return service.views("data")[found.pop()] if found else None

    running = eventually(the_run, what="the dataset's view")
    assert running["state"]["status"] == "running"
    assert running["state"]["name"] == "Range->MapBatches(double)"
    for _ in batches:
        pass

    done = eventually(lambda: the_run()["state"]["status"] == "done" and the_run(),
                    what="the run marked done")
    [operator] = done["state"]["operators"]
    assert (operator["rows"], operator["rows_total"], operator["tasks"]) == (1000, 1000, 10)
    assert operator["bytes"] > 0 and operator["rows_per_s"] > 0
    assert done["state"]["memory_budget"] > 0

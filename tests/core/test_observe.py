"""The driver's store of metrics, library views and logs (``ember/core/_observe.py``): pure
bookkeeping, tested without processes."""

from __future__ import annotations

import pytest

from ember.core._observe import Family, Store, filter_rows

COUNTER = Family("requests", "counter", "", ("route",))
GAUGE = Family("queue_depth", "gauge", "", ("queue",))
HISTOGRAM = Family("latency_ms", "histogram", "", (), (10.0, 100.0))


def driver_store() -> Store:
    store = Store()
    store.is_driver = True
    return store


def merged(store: Store) -> dict[str, dict]:
    return {family.name: series for family, series in store.merged()}


def test_counters_from_several_processes_add_up():
    store = driver_store()
    store.register(COUNTER)
    store.inc("requests", (("route", "/a"),), 2)
    batch = {"metrics": [("requests", "counter", "", ("route",), (), {(("route", "/a"),): 5.0})]}
    store.ingest(7, batch)
    store.ingest(7, batch)  # the same cumulative total again: not counted twice
    store.ingest(8, {"metrics": [("requests", "counter", "", ("route",), (),
                                  {(("route", "/a"),): 1.0})]})

    assert merged(store)["requests"] == {(("route", "/a"),): 8.0}


def test_a_gauge_shows_the_value_set_last_and_goes_with_its_process():
    store = driver_store()
    tags = (("queue", "q"),)
    store.ingest(1, {"metrics": [("queue_depth", "gauge", "", ("queue",), (),
                                  {tags: (3.0, 100.0)})]})
    store.ingest(2, {"metrics": [("queue_depth", "gauge", "", ("queue",), (),
                                  {tags: (9.0, 200.0)})]})
    assert merged(store)["queue_depth"] == {tags: 9.0}

    store.forget_source(2)  # that process ended

    assert merged(store)["queue_depth"] == {tags: 3.0}


def test_histograms_count_each_value_in_its_bucket_and_add_up_over_processes():
    store = driver_store()
    store.register(HISTOGRAM)
    for value in (5, 10, 50, 500):
        store.observe(HISTOGRAM, (), value)
    store.ingest(3, {"metrics": [("latency_ms", "histogram", "", (), (10.0, 100.0),
                                  {(): [1.0, 0.0, 0.0, 7.0, 1.0]})]})

    counts = merged(store)["latency_ms"][()]
    assert counts == [3.0, 1.0, 1.0, 572.0, 5.0]  # <=10, <=100, above; sum; count


def test_a_name_keeps_one_kind():
    store = driver_store()
    store.register(COUNTER)
    with pytest.raises(ValueError, match="'requests' is already defined as a counter"):
        store.register(Family("requests", "gauge", "", ("route",)))


def test_a_worker_sends_only_what_changed_and_its_views_once():
    worker = Store()
    worker.register(COUNTER)
    worker.inc("requests", (("route", "/"),), 1)
    worker.publish("serve", "app", state={"status": "RUNNING"})
    worker.publish("train", "run", event={"loss": 1.0})

    batch = worker.take_batch()
    assert batch is not None
    assert [m[0] for m in batch["metrics"]] == ["requests"]
    assert batch["views"] == {("serve", "app"): {"status": "RUNNING"}}
    assert batch["events"] == [("train", "run", {"loss": 1.0})]
    assert worker.take_batch() is None  # nothing new

    driver = driver_store()
    driver.ingest(5, batch)
    assert driver.view("serve")["app"]["state"] == {"status": "RUNNING"}
    assert driver.view("train")["run"]["events"] == [{"loss": 1.0}]


def test_views_keep_their_latest_state_and_a_bounded_history():
    store = driver_store()
    for step in range(2500):
        store.publish("train", "run", state={"step": step}, event={"step": step})

    view = store.view("train")["run"]
    assert view["state"] == {"step": 2499}
    assert len(view["events"]) == 2000
    assert view["events"][-1] == {"step": 2499}


def test_log_lines_of_chosen_processes_in_order_after_a_point():
    store = driver_store()
    first = store.open_log(1, "Printer", actor_id=10)
    second = store.open_log(2, "worker", actor_id=None)
    first.pid, second.pid = 100, 200
    store.add_lines(first, "stdout", ["a", "b"], task_id=None)
    store.add_lines(second, "stderr", ["x"], task_id=7)
    store.add_lines(first, "stdout", ["c"], task_id=None)

    lines = store.log_lines(lambda log: log.actor_id == 10)
    assert [line["text"] for line in lines] == ["a", "b", "c"]
    after = lines[1]["seq"]
    assert [line["text"] for line in store.log_lines(lambda log: True, after)] == ["x", "c"]
    assert [line["text"] for line in store.log_lines(lambda log: True, task_id=7)] == ["x"]


ROWS = [{"state": "ALIVE", "pid": 10, "name": "a"}, {"state": "DEAD", "pid": 11, "name": "b"},
        {"state": "DEAD", "pid": 12, "name": None}]


def test_filters_compare_as_text_ignoring_case():
    assert filter_rows(ROWS, [("state", "=", "dead")], None) == ROWS[1:]
    assert filter_rows(ROWS, [("state", "!=", "DEAD")], None) == ROWS[:1]
    assert filter_rows(ROWS, [("pid", "=", "11")], None) == ROWS[1:2]
    assert filter_rows(ROWS, [("state", "=", "DEAD"), ("pid", "=", 12)], None) == ROWS[2:]
    assert filter_rows(ROWS, None, 2) == ROWS[:2]


@pytest.mark.parametrize(("filters", "limit", "message"), [
    ([("state", "~", "x")], None, "predicate '~' is not supported"),
    ([("colour", "=", "x")], None, "cannot filter on 'colour': the columns are name, pid, state"),
    (["state=DEAD"], None, "a filter is a \\(key, predicate, value\\) tuple"),
    (None, -1, "limit=-1 must be >= 0"),
])
def test_bad_filters_say_what_is_wrong(filters, limit, message):
    with pytest.raises(ValueError, match=message):
        filter_rows(ROWS, filters, limit)

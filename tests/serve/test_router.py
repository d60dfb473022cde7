from __future__ import annotations

import random
from collections import Counter

import pytest

from ember.serve._router import Router


def make(n: int, cap: int = 2, **kw: object) -> Router:
    router = Router(cap, rng=random.Random(0), **kw)  # type: ignore[arg-type]
    router.set_replicas([f"r{i}" for i in range(n)])
    return router


def test_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="max_ongoing_requests=0"):
        Router(0)


def test_no_replicas_means_no_choice() -> None:
    assert make(0).choose(0.0) is None


def test_power_of_two_prefers_the_less_loaded_of_the_pair() -> None:
    router = make(2, cap=10)
    for _ in range(3):
        router.on_sent("r0", 0.0)
    # With two replicas, both are always sampled: the idle one wins every time.
    assert {router.choose(0.0) for _ in range(20)} == {"r1"}


def test_load_spreads_evenly_when_requests_complete_never() -> None:
    router = make(4, cap=100)
    for _ in range(40):
        choice = router.choose(0.0)
        router.on_sent(choice, 0.0)
    loads = [router.ongoing(r) for r in router.replica_ids]
    assert sum(loads) == 40
    assert max(loads) - min(loads) <= 3


def test_full_replicas_are_skipped_and_all_full_gives_none() -> None:
    router = make(3, cap=1)
    chosen = []
    for _ in range(3):
        replica = router.choose(0.0)
        assert replica is not None
        router.on_sent(replica, 0.0)
        chosen.append(replica)
    assert sorted(chosen) == ["r0", "r1", "r2"]
    assert router.choose(0.0) is None
    router.on_done("r1")
    assert router.choose(0.0) == "r1"


def test_on_done_never_goes_negative_and_unknown_replicas_are_ignored() -> None:
    router = make(1)
    router.on_done("r0")
    router.on_done("ghost")
    router.on_sent("ghost", 0.0)
    assert router.ongoing("r0") == 0
    assert router.ongoing("ghost") == 0


def test_removed_replica_gets_no_more_requests() -> None:
    router = make(2, cap=5)
    router.remove_replica("r0")
    assert {router.choose(0.0) for _ in range(10)} == {"r1"}


def test_set_replicas_keeps_the_load_of_survivors() -> None:
    router = make(2, cap=5)
    router.on_sent("r0", 0.0)
    router.set_replicas(["r0", "r9"])
    assert router.ongoing("r0") == 1
    assert router.ongoing("r9") == 0
    assert router.total_ongoing() == 1


def test_model_goes_to_the_replica_that_has_it() -> None:
    router = make(3, cap=10)
    router.report_models({"r2": ["m"]})
    router.on_sent("r2", 0.0)  # busier than the others, still preferred for its model
    assert router.choose(0.0, "m") == "r2"


def test_model_knowledge_is_immediate_after_sending() -> None:
    router = make(3, cap=10)
    first = router.choose(0.0, "m")
    router.on_sent(first, 0.0, "m")
    # No report from anyone yet: the router already knows where "m" is loading.
    assert router.choose(0.1, "m") == first


def test_least_loaded_holder_wins() -> None:
    router = make(3, cap=10)
    router.report_models({"r0": ["m"], "r1": ["m"]})
    router.on_sent("r0", 0.0)
    router.on_sent("r0", 0.0)
    router.on_sent("r1", 0.0)
    assert router.choose(0.0, "m") == "r1"


def test_new_model_goes_to_the_replica_with_fewest_models() -> None:
    router = make(3, cap=10)
    router.report_models({"r0": ["a", "b"], "r1": ["c"], "r2": ["d", "e", "f"]})
    assert router.choose(0.0, "new") == "r1"


def test_fewest_models_ties_break_on_load() -> None:
    router = make(2, cap=10)
    router.on_sent("r0", 0.0)
    assert router.choose(0.0, "new") == "r1"


def test_hot_model_spills_over_when_its_holder_is_busy() -> None:
    router = make(2, cap=10, spill_load=2)
    for _ in range(2):
        router.on_sent("r0", 0.0, "hot")
    assert router.choose(0.0, "hot") == "r1"
    router.on_sent("r1", 0.0, "hot")
    # Now both hold it: the least loaded holder takes the next one.
    assert router.choose(0.0, "hot") == "r1"


def test_hot_model_is_not_pinned_to_one_replica_under_load() -> None:
    router = make(3, cap=4, spill_load=2)
    used = Counter()
    for _ in range(9):
        replica = router.choose(0.0, "hot")
        assert replica is not None
        router.on_sent(replica, 0.0, "hot")
        used[replica] += 1
    assert len(used) == 3


def test_full_holder_falls_back_to_others_and_all_full_gives_none() -> None:
    router = make(2, cap=1)
    router.report_models({"r0": ["m"]})
    router.on_sent("r0", 0.0)
    assert router.choose(0.0, "m") == "r1"
    router.on_sent("r1", 0.0)
    assert router.choose(0.0, "m") is None


def test_sent_models_are_forgotten_unless_reported() -> None:
    router = make(2, cap=10, model_memory_s=5.0)
    router.on_sent("r1", 0.0, "m")
    router.on_done("r1")
    assert router.models_on("r1", 1.0) == {"m"}
    assert router.models_on("r1", 6.0) == frozenset()
    router.report_models({"r0": ["m"]})
    assert router.choose(6.0, "m") == "r0"


def test_eviction_shows_up_through_reports() -> None:
    router = make(2, cap=10, model_memory_s=5.0)
    router.report_models({"r0": ["m"]})
    router.report_models({"r0": []})
    assert router.models_on("r0", 0.0) == frozenset()


def test_a_report_that_leaves_out_an_old_send_forgets_it() -> None:
    router = make(2, cap=10, model_memory_s=10.0, report_lag_s=1.0)
    router.on_sent("r0", 0.0, "old")
    router.on_sent("r0", 4.5, "new")
    router.report_models({"r0": ["other"]}, now=5.0)
    # "old" was sent 5 s ago and the replica no longer has it: evicted. "new" may still be
    # loading without the report knowing yet: kept.
    assert router.models_on("r0", 5.0) == {"other", "new"}
    router.report_models({"r0": ["other"]}, now=6.0)
    assert router.models_on("r0", 6.0) == {"other"}


def test_a_full_replica_is_expected_to_evict_its_least_recently_used_model() -> None:
    router = make(2, cap=10)
    router.report_slots({"r0": 2, "r1": 2})
    for t, model in enumerate(["a", "b", "a"]):
        router.on_sent("r0", float(t), model)
    router.on_sent("r0", 3.0, "c")  # r0 keeps two models: loading c pushes out b, not a
    assert router.models_on("r0", 3.0) == {"a", "c"}
    # A report made before the eviction does not bring b back while reports may lag ...
    router.report_models({"r0": ["a", "b"]}, now=3.1)
    assert router.models_on("r0", 3.1) == {"a", "c"}
    assert router.choose(3.2, "b") == "r1"  # ... so b goes where there is room
    # Once reports are fresh they are believed again.
    router.report_models({"r0": ["a", "b"]}, now=10.0)
    assert "b" in router.models_on("r0", 10.0)


@pytest.mark.parametrize("seed", range(10))
def test_equally_full_replicas_give_up_their_stalest_model(seed: int) -> None:
    router = Router(10, rng=random.Random(seed))
    router.set_replicas(["r0", "r1", "r2"])
    router.report_slots({"r0": 1, "r1": 1, "r2": 1})
    router.on_sent("r0", 1.0, "a")
    router.on_sent("r1", 0.0, "b")  # used longest ago
    router.on_sent("r2", 2.0, "c")
    for r in ("r0", "r1", "r2"):
        router.on_done(r)
    assert router.choose(3.0, "d") == "r1"

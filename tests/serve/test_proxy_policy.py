"""Where serve's HTTP proxies run and how they follow the cluster (``_proxy_policy.py``)."""

from __future__ import annotations

import pytest

from ember.serve._proxy_policy import ProxyPlan, plan_proxies, proxy_nodes

HEAD = {"NodeID": "h", "IsHead": True}
B = {"NodeID": "b", "IsHead": False}
C = {"NodeID": "c", "IsHead": False}


def test_proxy_nodes_put_head_only_on_the_head_and_every_node_everywhere() -> None:
    nodes = [B, HEAD]
    assert proxy_nodes("HeadOnly", nodes, driver_node="b") == ["h"]
    assert proxy_nodes("EveryNode", nodes, driver_node="b") == ["h", "b"]  # the head's first
    assert proxy_nodes("Disabled", nodes, driver_node="b") == []
    assert proxy_nodes("HeadOnly", nodes[:1], driver_node="b") == [None]  # one node: no pin
    no_head = [{"NodeID": "x"}, {"NodeID": "y"}]
    assert proxy_nodes("HeadOnly", no_head, driver_node="y") == ["y"]  # the driver's node
    with pytest.raises(ValueError, match="'Everywhere' must be one of 'HeadOnly'"):
        proxy_nodes("Everywhere", nodes, driver_node="b")


def test_nothing_changes_while_every_proxy_answers_on_its_node() -> None:
    for location in ("HeadOnly", "EveryNode"):
        assert not plan_proxies(location, [HEAD, B], {"h": "h", "b": "b"}, gone=set())
    assert not plan_proxies("HeadOnly", [HEAD, B], {"h": "h"}, gone=set())
    assert not plan_proxies("HeadOnly", [HEAD], {"": None}, gone=set())  # not yet pinged


def test_a_gone_proxy_on_a_live_node_restarts() -> None:
    assert plan_proxies("HeadOnly", [HEAD], {"": "h"}, gone={""}) == ProxyPlan(restart=("",))
    assert plan_proxies("HeadOnly", [HEAD], {"": None}, gone={""}) == ProxyPlan(restart=("",))
    assert plan_proxies("EveryNode", [HEAD, B], {"h": "h", "b": "b"}, gone={"b"}) == \
        ProxyPlan(restart=("b",))


def test_a_node_that_left_takes_its_proxy_and_is_not_restarted() -> None:
    # Its ping fails too (the node is gone): dropped, not restarted.
    assert plan_proxies("EveryNode", [HEAD], {"h": "h", "b": "b"}, gone={"b"}) == \
        ProxyPlan(drop=("b",))
    # The unpinned proxy of a one-node start lives where the core put it.
    assert plan_proxies("HeadOnly", [B], {"": "h"}, gone={""}) == ProxyPlan(drop=("",))


def test_every_node_starts_a_proxy_on_each_node_that_joins_and_head_only_does_not() -> None:
    assert plan_proxies("EveryNode", [HEAD, B, C], {"h": "h", "b": "b"}, gone=set()) == \
        ProxyPlan(start=("c",))
    assert not plan_proxies("HeadOnly", [HEAD, B, C], {"h": "h"}, gone=set())
    # Started on one node (one unpinned proxy): a node that joins gets one, the first keeps its.
    assert plan_proxies("EveryNode", [B, HEAD], {"": "h"}, gone=set()) == \
        ProxyPlan(start=("b",))
    # Where the unpinned proxy runs is not known yet: wait for its ping rather than guess.
    assert not plan_proxies("EveryNode", [B, HEAD], {"": None}, gone=set())


def test_a_node_replacing_one_that_left_gets_a_proxy_in_the_same_round() -> None:
    assert plan_proxies("EveryNode", [HEAD, C], {"h": "h", "b": "b"}, gone={"b"}) == \
        ProxyPlan(drop=("b",), start=("c",))

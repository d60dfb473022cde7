"""Ray 2.5's ``ray.serve.dag``: the nodes of a deployment graph (see ``ember.dag``)."""

from ember.dag import DAGNode, InputAttributeNode, InputNode

__all__ = ["DAGNode", "InputAttributeNode", "InputNode"]

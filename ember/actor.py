"""Ray's ``ray.actor`` names: the classes behind ``@ember.remote`` classes and their handles.

``ActorClass`` is what ``@ember.remote`` makes of a class, ``ActorHandle`` what
``ActorClass.remote()`` returns; both serve for annotations and ``isinstance`` checks, and
accept a type argument as Ray's do (``ActorHandle[Counter]``); ``exit_actor()`` ends the actor
it is called in (as ``sys.exit()`` in a method does)::

    from ember.actor import ActorHandle

    def bump(counter: ActorHandle) -> int:
        return ember.get(counter.increment.remote())
"""

from __future__ import annotations

from ember.core._api import exit_actor
from ember.core._remote import ActorClass, ActorHandle, ActorMethod, method

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]

"""The keeper: the actor that owns serve's replicas and HTTP proxies, and holds the
controller's last checkpoint.

An actor fate-shares with whoever created it. Were replicas and proxies created by the
controller, a controller killed (out of memory, say) would take every replica and proxy with
it. They are created by the keeper instead, an actor that does nothing else, made by the driver
next to the controller; the controller restarts (``max_restarts=-1``), reads its checkpoint
back from the keeper and carries on with the same replicas and proxies, which never stopped
serving. ``serve.shutdown`` ends the keeper last, and with it anything it still owns.
"""

from __future__ import annotations

from typing import Any

import ember

KEEPER_NAME = "SERVE_KEEPER"


class Keeper:
    def __init__(self) -> None:
        self._checkpoint: Any = None
        self._apps: dict[str, Any] = {}  # app name -> its deployments' code, args and config
        self._created: list[Any] = []

    def create(self, kind: str, options: dict[str, Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """Start a ``"replica"`` or a ``"proxy"`` actor owned by this keeper; its handle."""
        from ember.serve._proxy import Proxy
        from ember.serve._replica import Replica

        cls = {"replica": Replica, "proxy": Proxy}[kind]
        actor = ember.remote(cls).options(**options).remote(*args, **kwargs)
        self._created.append(actor)
        return actor

    def created(self) -> list[Any]:
        """The actors this keeper started that the controller has not said it killed."""
        return list(self._created)

    def save(self, checkpoint: Any, killed: list[Any]) -> None:
        """Keep the controller's ``checkpoint``; forget the actors it ``killed`` since."""
        self._checkpoint = checkpoint
        if killed:
            self._created = [a for a in self._created if a not in killed]

    def save_app(self, name: str, spec: Any) -> None:
        """Keep an application's spec (``None``: it was deleted); saved once per deploy, apart
        from the checkpoint, which changes far more often and need not carry the code."""
        if spec is None:
            self._apps.pop(name, None)
        else:
            self._apps[name] = spec

    def load(self) -> tuple[dict[str, Any], Any]:
        """``(the applications' specs, the last checkpoint)``."""
        return dict(self._apps), self._checkpoint

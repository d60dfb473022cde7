"""The dashboard the driver serves: ``ember.init(include_dashboard=True)`` prints its URL.

Pages: overview, actors, tasks, serve, data, train, rl; plain HTML, JavaScript and CSS shipped
in this package (``static/``), no CDN and no build step. The same server answers ``/metrics``
(Prometheus) and the ``ember`` CLI (``ember status``, ``ember list``, ``ember logs``); see
``_server`` for how requests are authenticated and ``_session`` for how the CLI finds a program.
"""

__all__: list[str] = []

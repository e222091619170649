"""The gateway's operational parts, kept out of the decision path's room.

``audit`` (emergency-override records), ``metrics`` and ``interceptors``
(Prometheus, request ids), ``logs`` (JSON lines), ``tls``, ``workers``
(``--workers N``), ``shared_index`` (one copy of the arrays for all workers),
``disk_cache`` (fail-static cold start), ``redis_process`` and ``embedded``
(the private redis-server of the embedded default), ``demo``, ``sanctions``
and ``cli`` (``python -m gateway.ops``: the review tools).
"""

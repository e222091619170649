"""Claims-settlement eligibility gateway (医保支付资格 驾照式记分).

The decision path: ``servicer`` (messages <-> decisions, errors -> status
codes), ``decide`` (the rules of SPEC §4), ``index`` (the arrays, their
lookups and the overlay of live changes), ``claims`` (request validation).
Its I/O: ``feed`` (follows Redis through ``contract.reads``: verified
snapshots and changes), ``server`` (grpc.aio wiring, health, reflection),
``settings`` (``ELIG_*``), ``__main__`` (the CLI). Everything operational is
in ``gateway.ops``. The gateway imports ``contract``, never ``loader``.
"""

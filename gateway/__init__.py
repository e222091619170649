"""Claims-settlement eligibility gateway (医保支付资格 驾照式记分).

Modules: ``codes`` and ``days`` (encodings), ``domain`` (enums and errors),
``snapshot`` (the Redis key schema and snapshot format, shared with the
loader), ``index`` (the in-memory status index), ``decide`` (the decision
kernel), ``servicer``/``server`` (gRPC), ``feed`` (Redis -> index).
"""

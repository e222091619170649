"""What the loader and the gateway share, and nothing else defines.

``codes`` and ``days`` (the encodings), ``domain`` (the enumerations),
``errors`` (the one exception tree), ``snapshot`` (the Redis key schema,
the snapshot format and its one reader), ``changes`` (the live-change and
overlay format). The loader imports this package and never ``gateway``; the
gateway imports it and never ``loader``.
"""

"""Where Redis is, and the redis-py clients that reach it: one URL, or a
primary and its replicas found through Redis Sentinel.

The loader, the gateway and the ops tools all connect through here (so this
is in ``contract``: neither side imports the other). Two ways to say where:

- ``--redis-url`` (``ELIG_REDIS_URL``): one Redis, ``redis://`` or
  ``rediss://`` (TLS) with an ACL user and password, as redis-py reads it
  (``redis.Redis.from_url``);
- ``--redis-sentinel`` + ``--redis-master-name`` (``ELIG_REDIS_SENTINEL``,
  ``ELIG_REDIS_MASTER_NAME``): the Sentinels to ask and the name they monitor
  the primary under. The Sentinel list is ``host:port,host:port,...`` (port
  26379 when left out), or the same list as a URL to carry credentials and
  TLS: ``rediss://user:password@s1:26379,s2:26379/0?ssl_ca_certs=/ca.crt``.
  The user, password, database and TLS settings (``rediss``, every redis-py
  ``ssl_*`` query parameter) apply to the data nodes and to the Sentinels
  alike; ``sentinel_username=`` / ``sentinel_password=`` query parameters give
  the Sentinels other credentials (empty: none, for Sentinels without AUTH).

Discovery, failover and fallback are redis-py's own (``redis.sentinel`` /
``redis.asyncio.sentinel``), not ours: a primary client
(``Sentinel.master_for``) asks the Sentinels for the primary's address on
every new connection and drops its connections when the address changes or
the node it reaches says it is a replica now (``READONLY``); a replica client
(``Sentinel.slave_for``) connects to the replicas the Sentinels list as up,
round robin, and to the primary when none answers. A connection lost in a
failover is re-made on the next command, which asks the Sentinels again.
So the gateway's change-stream follower reads from a replica
(``--read-from replicas``) and falls back to the primary, while everything
that writes (the loader, the audit drain, ``ops overrides --refill-from``)
uses a primary client and always writes to whichever node is primary now.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as sentinel
from redis.connection import SSLConnection, parse_url

READ_FROM = ("primary", "replicas")
DEFAULT_SENTINEL_PORT = 26379
# Sentinels are asked with short timeouts: one that does not answer must not
# hold up discovery (redis-py then asks the next one).
SENTINEL_TIMEOUT_S = 1.0
# Query parameters of the Sentinel URL that concern only the Sentinels.
_SENTINEL_ONLY = ("sentinel_username", "sentinel_password")

# How the settings are named where a person sets them (errors name both).
URL_FLAG = "--redis-url (ELIG_REDIS_URL)"
SENTINEL_FLAG = "--redis-sentinel (ELIG_REDIS_SENTINEL)"
MASTER_NAME_FLAG = "--redis-master-name (ELIG_REDIS_MASTER_NAME)"


@dataclass(frozen=True)
class RedisTarget:
    """One Redis (``url``), or a Sentinel-managed primary and replicas
    (``sentinels`` + ``master_name``); build with ``redis_target``."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    # redis-py connection keyword arguments for the data nodes, and for the Sentinels.
    node_options: Mapping[str, Any] = field(default_factory=dict)
    sentinel_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uses_sentinel(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        """Where, for logs and errors, without any password."""
        if self.url is not None:
            return masked_url(self.url)
        hosts = ",".join(f"{_host_text(host)}:{port}" for host, port in self.sentinels)
        return f"Sentinel master {self.master_name!r} via {hosts}"

    # -- blocking clients: the loader, the ops tools, the tests -----------------------

    def client(self, *, replica: bool = False, **options: Any) -> redis.Redis:
        """A blocking client of the primary (or, ``replica``, of a replica with the
        primary as fallback); ``options`` are redis-py connection arguments.
        Closing it closes its connections to the Sentinels too."""
        if self.url is not None:
            return redis.Redis.from_url(self.url, **options)
        manager = sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            sentinel_kwargs=self._sentinel_kwargs(options),
            **{**self.node_options, **options},
        )
        make = manager.slave_for if replica else manager.master_for
        assert self.master_name is not None
        client: redis.Redis = make(  # type: ignore[no-untyped-call]
            self.master_name, connection_pool_class=_SyncPool
        )
        return client

    # -- asyncio clients: the gateway ----------------------------------------------------

    def async_client(self, *, replica: bool = False, **options: Any) -> aioredis.Redis:
        """The asyncio twin of ``client``."""
        if self.url is not None:
            return aioredis.Redis.from_url(self.url, **options)
        manager = asentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            sentinel_kwargs=self._sentinel_kwargs(options),
            **{**self.node_options, **options},
        )
        make = manager.slave_for if replica else manager.master_for
        assert self.master_name is not None
        client: aioredis.Redis = make(self.master_name, connection_pool_class=_AsyncPool)
        return client

    def async_clients(
        self, read_from: str = "primary", **options: Any
    ) -> tuple[aioredis.Redis, aioredis.Redis]:
        """(writer, reader) for a gateway: the writer is a primary client (the audit
        drain); the reader is a replica client with ``read_from="replicas"``, else
        the writer itself. Closing the writer closes the reader too."""
        writer = self.async_client(**options)
        if read_from == "primary" or self.url is not None:
            return writer, writer
        reader = self.async_client(replica=True, **options)
        pool = writer.connection_pool
        assert isinstance(pool, _AsyncPool)
        pool.companions.append(reader)
        return writer, reader

    def _sentinel_kwargs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        timeouts = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        }
        for name in ("socket_timeout", "socket_connect_timeout"):
            if options.get(name) is not None:
                timeouts[name] = min(float(options[name]), SENTINEL_TIMEOUT_S)
        return {**timeouts, **self.sentinel_options}


class _SyncPool(sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool; closing it (``Redis.close``) also closes the
    connections to the Sentinels that ``Sentinel`` opened for it."""

    def close(self) -> None:
        super().close()
        self.sentinel_manager.close()


class _AsyncPool(asentinel.SentinelConnectionPool):
    """The asyncio twin of ``_SyncPool``; it also closes its ``companions``
    (a gateway's replica client, closed with its primary client)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.companions: list[aioredis.Redis] = []

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            for companion in self.companions:
                await companion.aclose()
            await self.sentinel_manager.aclose()


def redis_target(
    url: str | None, sentinel_spec: str | None, master_name: str | None
) -> RedisTarget | None:
    """The target the settings name; None when they name none (the gateway's
    embedded default). ``ValueError`` naming the flags for what cannot work:
    both a URL and Sentinels, Sentinels without a master name (or the reverse),
    a Sentinel list that does not parse."""
    url = url or None
    sentinel_spec = (sentinel_spec or "").strip() or None
    master_name = (master_name or "").strip() or None
    if url is not None and sentinel_spec is not None:
        raise ValueError(
            f"give {URL_FLAG} or {SENTINEL_FLAG}, not both: one Redis, or the Sentinels "
            "that say which node is the primary"
        )
    if sentinel_spec is None:
        if master_name is not None:
            raise ValueError(f"{MASTER_NAME_FLAG} is only used with {SENTINEL_FLAG}")
        if url is None:
            return None
        _check_url(url)
        return RedisTarget(url=url)
    if master_name is None:
        raise ValueError(
            f"{SENTINEL_FLAG} needs {MASTER_NAME_FLAG}: the name the Sentinels monitor the "
            "primary under (their `sentinel monitor NAME ...` line)"
        )
    sentinels, node_options, sentinel_options = parse_sentinels(sentinel_spec)
    return RedisTarget(
        sentinels=sentinels,
        master_name=master_name,
        node_options=node_options,
        sentinel_options=sentinel_options,
    )


def parse_sentinels(
    spec: str,
) -> tuple[tuple[tuple[str, int], ...], dict[str, Any], dict[str, Any]]:
    """(Sentinel addresses, data-node options, Sentinel options) of a Sentinel list
    (see the module docstring); ``ValueError`` naming the flag and the bad part."""
    scheme, has_scheme, rest = spec.partition("://")
    if not has_scheme:
        scheme, rest = "redis", spec
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"{SENTINEL_FLAG}: scheme {scheme!r} is not redis or rediss")
    rest, _, query = rest.partition("?")
    userinfo, _, hosts_and_path = rest.rpartition("@")
    hosts_text, _, path = hosts_and_path.partition("/")
    sentinels = tuple(_address(part.strip()) for part in hosts_text.split(",") if part.strip())
    if not sentinels:
        raise ValueError(f"{SENTINEL_FLAG}: no host:port in {_masked_spec(spec)!r}")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    own = {name: value for name, value in pairs if name in _SENTINEL_ONLY}
    shared = urllib.parse.urlencode([(k, v) for k, v in pairs if k not in _SENTINEL_ONLY])
    # redis-py reads the rest as it reads a --redis-url (one host stands in for all).
    userinfo_part = f"{userinfo}@" if userinfo else ""
    path_part = f"/{path}" if path else ""
    query_part = f"?{shared}" if shared else ""
    try:
        parsed: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
            f"{scheme}://{userinfo_part}sentinel{path_part}{query_part}"
        )
    except ValueError as exc:
        raise ValueError(f"{SENTINEL_FLAG}: {exc}") from None
    parsed.pop("host", None)
    parsed.pop("port", None)
    if parsed.pop("connection_class", None) is SSLConnection:
        parsed["ssl"] = True
    node = dict(parsed)
    both = {k: v for k, v in parsed.items() if k != "db"}
    if "sentinel_username" in own:
        both["username"] = own["sentinel_username"] or None
    if "sentinel_password" in own:
        both["password"] = own["sentinel_password"] or None
        if not own["sentinel_password"]:
            both.pop("username", None)
    return sentinels, node, {k: v for k, v in both.items() if v is not None}


def online_replicas(replication: Mapping[str, Any]) -> int:
    """Replicas in sync with the primary, from its ``INFO replication`` (as redis-py
    parses it): those in state ``online``. ``connected_slaves`` also counts a
    replica still waiting for its first full sync, which cannot acknowledge
    anything yet (``WAIT`` would time out on it)."""
    count = 0
    for name, value in replication.items():
        if name.startswith("slave") and name[5:].isdigit() and isinstance(value, Mapping):
            count += value.get("state") == "online"
    return count


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and errors:
    ``redis://app:s3cret@db:6379/0`` -> ``redis://app:***@db:6379/0`` (a
    ``password=`` query parameter too)."""
    parts = urllib.parse.urlsplit(url)
    masked = url  # edited in place: urlunsplit would turn unix:///path into unix:/path
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() in ("password", "sentinel_password") for k, _ in pairs):
        query = urllib.parse.urlencode(
            [(k, "***" if k.lower() in ("password", "sentinel_password") else v) for k, v in pairs],
            safe="*",
        )
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def _masked_spec(spec: str) -> str:
    scheme, has_scheme, rest = spec.partition("://")
    if not has_scheme or "@" not in rest:
        return spec
    userinfo, _, hosts = rest.rpartition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}"


def _address(text: str) -> tuple[str, int]:
    """``host:port``, ``host`` (port 26379) or ``[v6]:port`` of the Sentinel list."""
    if text.startswith("["):
        host, _, port_text = text[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"{SENTINEL_FLAG}: {text!r} is not host:port")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{SENTINEL_FLAG}: {text!r}: {port_text!r} is not a TCP port")
    return host, int(port_text)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"{URL_FLAG}: {masked_url(url)!r} is not a redis://, rediss:// or unix:// URL"
        )

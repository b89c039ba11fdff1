"""The Redis backend on a Redis Cluster (``redis+cluster://``): redis-py's ``RedisCluster``
with the one thing the backend needs that it lacks, ``MULTI``/``EXEC`` pipelines.

Every key of a typedq prefix carries the hash tag ``{prefix}`` (see ``_redis_keys``), so
all the keys of a queue, of its dead-letter queue and of every other queue of the prefix
live in one slot of one node: each Lua script, ``BLPOP`` and transaction names keys of one
slot, as a Cluster requires. To spread queues over the nodes, use one prefix per group of
queues that share a dead-letter queue.

redis-py 5 refuses ``pipeline(transaction=True)`` on a Cluster. :class:`ClusterClient`
serves it with :class:`SlotTransaction`: the commands are queued as on any pipeline, and
``execute()`` sends them in one ``MULTI``/``EXEC`` to the node that owns the slot of the
first key (every key of such a transaction shares that slot). ``WATCH`` is not served
(only the move from key layout 1 uses it, and no queue of layout 1 was ever on a
Cluster). A slot that moved between nodes meanwhile is refused by the node (``MOVED``)
and nothing of the transaction runs: the caller sees a ``BackendError``, and the next
command finds the new owner.

redis-py's own retries on connection errors are turned off (a ``Retry`` of no attempts;
redis-py 5 also needs ``cluster_error_retry_attempts=0``), as on a single server: a script
whose reply was lost may have run.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster

__all__ = ["ClusterClient", "SlotTransaction", "new_cluster_client"]


class SlotTransaction(Pipeline):
    """A ``MULTI``/``EXEC`` pipeline sent to the node owning its first key's slot."""

    def __init__(self, cluster: ClusterClient) -> None:
        node = cluster.get_default_node()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        callbacks = node.redis_connection.response_callbacks if node.redis_connection is not None else {}
        super().__init__(None, callbacks, True, None)  # type: ignore[arg-type]  # the pool is the slot's, set at execute
        self._cluster = cluster

    def watch(self, *names: Any) -> Any:
        raise redis.RedisError("WATCH is not served on a Redis Cluster by typedq")

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands in one ``MULTI``/``EXEC`` to their slot's node."""
        if self.command_stack:
            key = self.command_stack[0][0][1]
            node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            client = node.redis_connection if node is not None else None
            if client is None:
                self._cluster.nodes_manager.initialize()
                node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]  # as above
                client = self._cluster.get_redis_connection(node)
            self.connection_pool = client.connection_pool
            self.response_callbacks = client.response_callbacks
        return super().execute(raise_on_error)


class ClusterClient(RedisCluster):
    """``RedisCluster`` whose ``pipeline(transaction=True)`` is a :class:`SlotTransaction`."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if transaction:
            return SlotTransaction(self)
        return super().pipeline(transaction=None, shard_hint=shard_hint)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def new_cluster_client(
    nodes: tuple[tuple[str, int], ...], kwargs: dict[str, Any], *, tls: bool
) -> ClusterClient:
    """A client of the Cluster that ``nodes`` (startup nodes) belong to; ``kwargs`` are the
    connection options of a single server's pool (a Cluster has database 0 only, and
    ``max_connections`` is per node)."""
    options = {k: v for k, v in kwargs.items() if k not in ("db", "max_connections")}
    if kwargs.get("max_connections") is not None:
        options["max_connections"] = kwargs["max_connections"]
    if tls:
        options["ssl"] = True
    if int(redis.__version__.split(".")[0]) < 6:
        options["cluster_error_retry_attempts"] = 0
    startup = [ClusterNode(host, port) for host, port in nodes]  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return ClusterClient(startup_nodes=startup, **options)

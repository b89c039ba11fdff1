"""A private 3-node Redis Cluster a test session owns: three ``redis-server`` processes
with ``cluster-enabled yes`` on free loopback ports, joined by ``redis-cli --cluster
create`` (three primaries, no replicas), stopped at teardown. The shared server on
127.0.0.1:6379 is never touched.

Without ``redis-server`` or ``redis-cli`` the test is skipped with the reason, or fails
when ``TYPEDQ_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import skip_or_fail
from tests.reliability.redis_server import RedisServer

__all__ = ["RedisCluster3", "cluster_port"]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free loopback port of at most 55535 whose cluster bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.randint(20000, 55535)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster3:
    """Three cluster-enabled private servers in ``folder``, joined into one Cluster."""

    def __init__(self, folder: Path) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            skip_or_fail("redis-cli is not installed: the Redis Cluster tests create a Cluster with it")
            raise AssertionError("unreachable")  # skip_or_fail raised
        self.cli = cli
        options = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": "5000",
        }
        self.nodes = [RedisServer(folder / f"node{i}", options, port=cluster_port()) for i in range(3)]

    def start(self, timeout: float = 30.0) -> RedisCluster3:
        """Start the nodes, create the Cluster and wait until every node says it is ok."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            done = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
            deadline = time.monotonic() + timeout
            while not all(self._ok(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        client = node.client(socket_timeout=2)
        try:
            info = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def url(self, prefix: str) -> str:
        """A ``redis+cluster://`` URL listing two of the nodes as startup nodes."""
        nodes = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"redis+cluster://{nodes}?prefix={prefix}"

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (and no other), on every node."""
        for node in self.nodes:
            client = node.client()
            try:
                keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
                keys += client.scan_iter(match=f"{{{prefix}:*", count=1000)
                for key in keys:  # keys of two slots never go in one UNLINK on a Cluster
                    client.unlink(key)
            finally:
                client.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

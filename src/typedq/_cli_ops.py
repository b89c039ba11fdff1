"""``typedq metrics`` and ``typedq api``: the Prometheus exporter and the REST API server.

Both read the store named by ``--backend`` (or ``--app``, whose manager also brings its
typed job types, so the API can take typed submissions). ``typedq api`` refuses to start
without a token (``TYPEDQ_API_TOKEN``) unless ``--insecure-no-auth`` is given with a
loopback ``--host``.
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from typing import Any

import click

from typedq._cli_common import CLIError, env_of
from typedq.manager import JobQueueManager
from typedq.process import load_app

__all__ = ["api_cmd", "metrics_cmd"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _manager(
    app: str | None, backend: str | None, config_path: str | None, *, create: bool = False
) -> JobQueueManager:
    if app:
        manager = load_app(app)
        env = env_of(backend or manager.config["backend"], config_path)
        for name in env._discover(manager):
            if name not in manager.queues:
                manager.create_queue(name)
        return manager
    return env_of(backend, config_path).open(create=create)


_app_option = click.option(
    "--app", metavar="MODULE:ATTR", help="Your JobQueueManager (or a function returning one)."
)
_backend_options = [
    click.option("--backend", metavar="URL", help="Backend URL (env TYPEDQ_BACKEND)."),
    click.option("--config", "config_path", metavar="PATH", help="Settings file (typedq.json)."),
]


def _with_backend(func: Any) -> Any:
    for option in reversed(_backend_options):
        func = option(func)
    return _app_option(func)


@click.command(name="metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@_with_backend
def metrics_cmd(
    *, host: str, port: int, app: str | None, backend: str | None, config_path: str | None
) -> None:
    """Serve Prometheus metrics of the store at http://HOST:PORT/metrics until Ctrl-C."""
    from typedq.metrics import serve_metrics  # noqa: PLC0415  (prometheus-client is an optional extra)

    manager = _manager(app, backend, config_path)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server, _ = serve_metrics(manager, host=host, port=port)
        click.echo(f"typedq metrics of {manager.config['backend']} at http://{host}:{server.server_port}/metrics")
        stop.wait()
        server.shutdown()
        server.server_close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        manager.close(graceful=False)


@click.command(name="api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve without a token (every caller an admin); only on a loopback --host.")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(1),
              help="Largest request body (bytes).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow this origin (CORS off by default).")
@_with_backend
def api_cmd(
    *, host: str, port: int, insecure_no_auth: bool, max_body: int, cors_origins: tuple[str, ...],
    app: str | None, backend: str | None, config_path: str | None,
) -> None:
    """Serve the REST API and the dashboard at http://HOST:PORT/ until Ctrl-C.

    Needs an admin token in TYPEDQ_API_TOKEN (read-only tokens: TYPEDQ_API_READ_TOKEN;
    each a comma-separated list, 16+ characters).
    """
    import uvicorn  # noqa: PLC0415  (uvicorn and fastapi are an optional extra)

    from typedq.api import Tokens, create_app  # noqa: PLC0415

    tokens = Tokens.from_env()
    if tokens.empty:
        if not insecure_no_auth:
            raise CLIError("no API token: set TYPEDQ_API_TOKEN (or --insecure-no-auth on 127.0.0.1)")
        if not _is_loopback(host):
            raise CLIError(f"--insecure-no-auth is only allowed on a loopback address, not --host {host}")
    # The API can submit jobs, so, like `typedq enqueue`, it may create the database.
    manager = _manager(app, backend, config_path, create=True)
    try:
        server = create_app(
            manager, tokens=tokens, insecure_no_auth=insecure_no_auth, max_body_bytes=max_body,
            cors_origins=cors_origins,
        )
        click.echo(f"typedq API of {manager.config['backend']} at http://{host}:{port}/")
        uvicorn.run(server, host=host, port=port, log_level="warning")
    finally:
        manager.close(graceful=False)

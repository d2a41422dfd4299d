"""What the batch triggers of one triggerer process share: per connection one HTTP client and its pollers.

Triggers of the same connection (same id *and* same settings, so two connections never share credentials)
send their polls through one hook, whose async client holds a small pool of kept-alive TCP connections; the
hook is closed when its last trigger ends. Per connection and poll interval, one
:class:`~airflow_provider_openai_batch.triggers._poller.BatchPoller` learns the statuses of every batch its
triggers wait on. Everything is kept per event loop (an HTTP client belongs to the loop that opened it).

What a first poll would otherwise import or build on the event loop (the hook module, httpx's async stack,
the TLS context) is done once per process in a thread, before the first trigger polls: :func:`warm_up`.
This module itself imports nothing heavy, so the trigger module can import it at the top.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from airflow_provider_openai_batch.triggers._poller import BatchPoller

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks._settings import ConnectionSettings
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.models import Batch

__all__ = ["Subscription", "subscribe", "warm_up"]

log = logging.getLogger(__name__)

#: TCP connections one connection's triggers hold at most, together.
POOL_SIZE = 8

#: What Airflow's first asynchronous connection lookup imports (already loaded in a real triggerer; not in a
#: fresh process). Best effort: a module missing from some Airflow version is skipped.
_LOOKUP_MODULES = (
    "asgiref.sync",
    "airflow.sdk.definitions.connection",
    "airflow.sdk.execution_time.cache",
    "airflow.sdk.execution_time.supervisor",
)

_warm_lock = threading.Lock()
_warm: concurrent.futures.Future[None] | None = None


def _load() -> None:
    """Import and build, in a worker thread, what the first poll needs."""
    import anyio._backends._asyncio  # noqa: F401  (httpcore picks its async backend, anyio, at the first request)
    import h11  # noqa: F401
    import httpcore._backends.anyio  # noqa: F401
    import httpx  # noqa: F401

    from airflow_provider_openai_batch.hooks import openai_batch  # noqa: F401
    from airflow_provider_openai_batch.hooks._transport import tls_context

    tls_context(True)  # loading the CA bundle takes 20-90 ms
    for name in _LOOKUP_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


async def warm_up() -> None:
    """Run :func:`_load` once per process, off the event loop; later calls return at once."""
    global _warm
    with _warm_lock:
        if _warm is None:
            _warm = concurrent.futures.Future()
            threading.Thread(target=_warm_in_thread, args=(_warm,), name="openai-batch-warm-up", daemon=True).start()
        warm = _warm
    if not warm.done():
        await asyncio.wrap_future(warm)
    warm.result()


def _warm_in_thread(future: concurrent.futures.Future[None]) -> None:
    try:
        _load()
    except BaseException as exc:  # reported to every trigger that waits for it; the next process tries again
        global _warm
        with _warm_lock:
            _warm = None
        future.set_exception(exc)
    else:
        future.set_result(None)


class _Client:
    """One connection's hook (and so its pooled async client), counted by the pollers using it."""

    __slots__ = ("hook", "users")

    def __init__(self, hook: OpenAIBatchHook) -> None:
        self.hook = hook
        self.users = 0


class _Registry:
    """The clients and pollers of one event loop."""

    def __init__(self) -> None:
        self.clients: dict[ConnectionSettings, _Client] = {}
        self.pollers: dict[tuple[str, int, float], BatchPoller] = {}
        self.closing: set[asyncio.Task[None]] = set()

    def poller(self, conn_id: str, max_retries: int, interval: float) -> BatchPoller:
        key = (conn_id, max_retries, interval)
        poller = self.pollers.get(key)
        if poller is None:
            connection = _Connection(self, conn_id, max_retries, interval)
            poller = BatchPoller(
                conn_id=conn_id,
                max_retries=max_retries,
                interval=interval,
                concurrency=POOL_SIZE,
                connect=connection.connect,
            )
            poller.on_idle = connection.close
            self.pollers[key] = poller
        return poller

    def acquire(self, settings: ConnectionSettings, interval: float) -> OpenAIBatchHook:
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        client = self.clients.get(settings)
        if client is None:
            # Keep idle connections past the next round: httpx would close them after 5 s, and every round at
            # the default 60 s interval would open new TCP connections (and TLS handshakes).
            hook = OpenAIBatchHook(
                settings.conn_id,
                max_retries=settings.max_retries,
                keepalive_expiry=interval * 1.1 + 30,
                max_connections=POOL_SIZE,
            )
            hook._async_settings = settings  # exactly the settings this client is keyed by
            client = self.clients[settings] = _Client(hook)
        client.users += 1
        return client.hook

    def release(self, settings: ConnectionSettings) -> None:
        client = self.clients[settings]
        client.users -= 1
        if client.users == 0:
            del self.clients[settings]
            # Closed in a task of its own, so that the cancellation of the last trigger cannot interrupt it.
            task = asyncio.ensure_future(client.hook.aclose())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    def forget(self, poller: BatchPoller) -> None:
        key = (poller.conn_id, poller.max_retries, poller.interval)
        if poller.idle and self.pollers.get(key) is poller:
            del self.pollers[key]
            if poller.on_idle is not None:
                poller.on_idle()


class _Connection:
    """A poller's view of its connection: looked up again before every round; the client follows the settings."""

    __slots__ = ("conn_id", "interval", "max_retries", "registry", "settings")

    def __init__(self, registry: _Registry, conn_id: str, max_retries: int, interval: float) -> None:
        self.registry = registry
        self.conn_id = conn_id
        self.max_retries = max_retries
        self.interval = interval
        self.settings: ConnectionSettings | None = None

    async def connect(self) -> tuple[OpenAIBatchHook, str]:
        await warm_up()  # first: the hook module is imported there, off the loop
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        settings = await OpenAIBatchHook(self.conn_id, max_retries=self.max_retries).aget_settings()
        if settings != self.settings:  # first round, or the connection changed: its own client
            hook = self.registry.acquire(settings, self.interval)
            self.close()
            self.settings = settings
        else:
            hook = self.registry.clients[settings].hook
        return hook, settings.status_polling

    def close(self) -> None:
        if self.settings is not None:
            self.registry.release(self.settings)
            self.settings = None


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = weakref.WeakKeyDictionary()


def _registry() -> _Registry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = _Registry()
    return registry


class Subscription:
    """One trigger's place in its connection's poller: :meth:`next` gives the batch each round.

    :param poller: the poller of the connection and the trigger's poll interval.
    :param batch_id: the batch waited on.
    """

    __slots__ = ("batch_id", "poller")

    def __init__(self, *, poller: BatchPoller, batch_id: str) -> None:
        self.poller = poller
        self.batch_id = batch_id

    def next(self) -> asyncio.Future[Batch]:
        """The batch as the next round reports it (at most one poll interval from now), to await.

        :raises Exception: (from the future) the error of the request that should have reported it, or of the
            connection's lookup (a missing or invalid connection).
        """
        return self.poller.next_status(self.batch_id)

    def close(self) -> None:
        """Leave the poller; the last trigger of a connection closes its client."""
        self.poller.unsubscribe(self.batch_id)
        _registry().forget(self.poller)


async def subscribe(conn_id: str, batch_id: str, *, poll_interval: float, max_retries: int) -> Subscription:
    """Join the poller of ``conn_id`` for ``batch_id``. Returns without suspending: the poller looks the
    connection up and opens its client itself, so triggers that start together never wake up together."""
    poller = _registry().poller(conn_id, max_retries, poll_interval)
    poller.subscribe(batch_id)
    return Subscription(poller=poller, batch_id=batch_id)

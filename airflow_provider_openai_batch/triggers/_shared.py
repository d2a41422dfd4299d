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

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks._settings import ConnectionSettings
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.triggers._poller import BatchPoller

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
    from airflow_provider_openai_batch.triggers import _poller  # noqa: F401

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
    """The clients, pollers and in-flight connection lookups of one event loop."""

    def __init__(self) -> None:
        self.lookups: dict[tuple[str, int], asyncio.Future[ConnectionSettings]] = {}
        self.clients: dict[ConnectionSettings, _Client] = {}
        self.pollers: dict[tuple[ConnectionSettings, float], BatchPoller] = {}
        self.closing: set[asyncio.Task[None]] = set()

    async def settings(self, conn_id: str, max_retries: int) -> ConnectionSettings:
        """The connection's settings; triggers starting together share one lookup."""
        key = (conn_id, max_retries)
        pending = self.lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(_lookup(conn_id, max_retries))
            self.lookups[key] = pending
            pending.add_done_callback(lambda _: self.lookups.pop(key, None))
        return await asyncio.shield(pending)  # a cancelled trigger does not cancel the others' lookup

    def poller(self, settings: ConnectionSettings, interval: float) -> BatchPoller:
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
        from airflow_provider_openai_batch.triggers._poller import BatchPoller

        poller = self.pollers.get((settings, interval))
        if poller is None:
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
            poller = BatchPoller(
                hook=client.hook, interval=interval, mode=settings.status_polling, concurrency=POOL_SIZE
            )
            self.pollers[(settings, interval)] = poller
        return poller

    def release(self, settings: ConnectionSettings, interval: float, poller: BatchPoller) -> None:
        if not poller.idle or self.pollers.get((settings, interval)) is not poller:
            return
        del self.pollers[(settings, interval)]
        client = self.clients[settings]
        client.users -= 1
        if client.users == 0:
            del self.clients[settings]
            # Closed in a task of its own, so that the cancellation of the last trigger cannot interrupt it.
            task = asyncio.ensure_future(client.hook.aclose())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = weakref.WeakKeyDictionary()


def _registry() -> _Registry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = _Registry()
    return registry


async def _lookup(conn_id: str, max_retries: int) -> ConnectionSettings:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

    return await OpenAIBatchHook(conn_id, max_retries=max_retries).aget_settings()


class Subscription:
    """One trigger's place in its connection's poller: :meth:`next` gives the batch each round.

    :param settings: the connection's settings (the key of its client and poller).
    :param poller: the poller of the connection and the trigger's poll interval.
    :param batch_id: the batch waited on.
    """

    __slots__ = ("batch_id", "interval", "poller", "settings")

    def __init__(self, *, settings: ConnectionSettings, poller: BatchPoller, interval: float, batch_id: str) -> None:
        self.settings = settings
        self.poller = poller
        self.interval = interval
        self.batch_id = batch_id

    async def next(self) -> Batch:
        """The batch as the next round reports it (at most one poll interval from now).

        :raises Exception: the error of the request that should have reported it.
        """
        return await self.poller.next_status(self.batch_id)

    def close(self) -> None:
        """Leave the poller; the last trigger of a connection closes its client."""
        self.poller.unsubscribe(self.batch_id)
        _registry().release(self.settings, self.interval, self.poller)


async def subscribe(conn_id: str, batch_id: str, *, poll_interval: float, max_retries: int) -> Subscription:
    """Join the poller of ``conn_id`` for ``batch_id``, creating the connection's client on first use.

    :raises Exception: when the connection cannot be looked up or is invalid.
    """
    await warm_up()
    registry = _registry()
    settings = await registry.settings(conn_id, max_retries)
    poller = registry.poller(settings, poll_interval)
    poller.subscribe(batch_id)
    return Subscription(settings=settings, poller=poller, interval=poll_interval, batch_id=batch_id)

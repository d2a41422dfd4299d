"""The coalescing poller: one per connection and poll interval in a triggerer, for every batch waited on there.

Each interval it learns the status of every waited-on batch with as few requests as it can. Batches are listed
newest first, 100 a page, when the pages that hold them are fewer than the batches (one ``GET /batches``
page reports up to 100 of them); the rest, and every batch when only one is waited on, are asked for with
``GET /batches/{id}``, as a single trigger always did. Where last interval's pages held the batches, this
interval asks for the same pages again in parallel (a page starts after a batch id, so it keeps its place
however many batches are created above it); batches not found there are followed down the list as long as
that is cheaper than asking for them one by one, and never past the oldest of them. A batch a list page
leaves out is asked for on its own, and so is every batch of a service whose list is not usable.

Every trigger receives the batch as the API returned it, or the error of the request that should have
reported it. A request's failure reaches only the triggers whose batches that request was for.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.exceptions import (
    BadRequestError,
    NotFoundError,
    OpenAIBatchAPIError,
)
from airflow_provider_openai_batch.models import Batch, BatchPage

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

__all__ = ["PAGE_SIZE", "BatchPoller", "next_round_at"]

log = logging.getLogger(__name__)

#: Batches per ``GET /batches`` page: the API's maximum.
PAGE_SIZE = 100
#: Cursor of the first page (no ``after``).
TOP = ""
#: Most pages one round reads, whatever the mode (a bound, not a plan: 10,000 batches).
MAX_PAGES = 100
#: Trigger wake-ups per loop iteration: results are handed over in slices of this size, so that the
#: triggers woken by one round never hold the event loop for long together.
WAKE_SLICE = 25
#: A round starts early by the previous round's length, by at most this share of the interval.
MAX_LEAD = 0.25


def next_round_at(*, started: float, interval: float, now: float) -> float:
    """When the round after the one that began at ``started`` and ended ``now`` begins (loop clock).

    A round reads its pages over some time, and a batch that turns terminal just after its page was read is
    learned by the next round at the same point. Starting the next round early by this round's length, so
    that it ends about one interval after this one began, keeps every status handed over at most one interval
    old: an event comes at most one interval after its batch finished. The lead is at most ``MAX_LEAD`` of the
    interval, so rounds are never more than a third more frequent than the interval; a round that overran its
    interval is followed at once.

    :param started: when the round began.
    :param interval: the poll interval.
    :param now: when it ended.
    """
    lead = min(max(now - started, 0.0), interval * MAX_LEAD)
    return max(started + interval - lead, now)


class BatchPoller:
    """Learns the statuses of the batches waited on through one connection, once per ``interval``.

    :param conn_id: the connection's id (for logs).
    :param max_retries: the hook's retries per request (part of the poller's key).
    :param interval: seconds between rounds; every waiting trigger gets a status each round.
    :param concurrency: requests in flight at once, at most (the pool's size).
    :param connect: called before every round: the hook to send with (the connection's shared client) and the
        connection's ``status_polling`` mode (``auto``, ``list`` or ``retrieve``), as the connection is now.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        max_retries: int,
        interval: float,
        concurrency: int,
        connect: Callable[[], Awaitable[tuple[OpenAIBatchHook, str]]],
    ) -> None:
        self.conn_id = conn_id
        self.max_retries = max_retries
        self.interval = interval
        #: called once the last subscriber left (releases the connection's client).
        self.on_idle: Callable[[], None] | None = None
        self.mode = "auto"
        self._connect = connect
        self._hook: OpenAIBatchHook | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self._handing = asyncio.Lock()
        self._concurrency = concurrency
        self._subscribers: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, list[asyncio.Future[Batch]]] = {}
        #: batch id -> the cursor of the page that held it last round.
        self._page_of: dict[str, str] = {}
        #: batches a listing did not find: asked for on their own from then on.
        self._unlisted: set[str] = set()
        self._created: dict[str, int] = {}
        self._list_usable = True
        self._task: asyncio.Task[None] | None = None
        #: requests sent, by kind (for logs, tests and benchmarks).
        self.requests: collections.Counter[str] = collections.Counter()

    @property
    def hook(self) -> OpenAIBatchHook:
        if self._hook is None:
            raise RuntimeError("the poller has not connected yet")
        return self._hook

    # -- subscriptions -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._subscribers

    def subscribe(self, batch_id: str) -> None:
        self._subscribers[batch_id] += 1

    def unsubscribe(self, batch_id: str) -> None:
        self._subscribers[batch_id] -= 1
        if self._subscribers[batch_id] <= 0:
            del self._subscribers[batch_id]
            for forget in (self._page_of, self._created, self._waiting):
                forget.pop(batch_id, None)
            self._unlisted.discard(batch_id)
        if self.idle and self._task is not None:
            self._task.cancel()
            self._task = None

    def next_status(self, batch_id: str) -> asyncio.Future[Batch]:
        """The batch as the next round learns it: a future to await (no coroutine of its own, so that a waiting
        trigger holds as few objects as possible across the interval).

        :raises Exception: (from the future) the error of the request that should have reported this batch.
        """
        future: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        # One list per batch for the whole wait, emptied when its round answers, not a new one each round.
        self._waiting.setdefault(batch_id, []).append(future)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"openai-batch-poller-{self.conn_id}")
        return future

    # -- rounds ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.interval
        failure = await self._reconnect()  # set up before the first round is due
        first = True
        while not self.idle:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            started = loop.time()
            # The first round learns where the batches are, one page after another; later rounds read the known
            # pages in parallel, so its length says nothing about theirs and does not bring the next one forward.
            guides = not first
            due = [batch_id for batch_id, futures in self._waiting.items() if futures]
            if due:
                if not first:
                    failure = await self._reconnect()
                first = False
                if failure is not None:  # the connection's own failure (lookup, settings) reaches its triggers
                    await self._fail(due, failure)
                else:
                    try:
                        await self._round(due)
                    except Exception as exc:  # never leave a trigger waiting on a round that broke
                        log.exception("A status round for %d batch(es) failed", len(due))
                        await self._fail(due, exc)
            ended = loop.time()
            next_round = next_round_at(started=started, interval=self.interval, now=ended if guides else started)
            next_round = max(next_round, ended)

    async def _reconnect(self) -> BaseException | None:
        """Look the connection up again (its settings may have changed); the failure, if any."""
        try:
            self._hook, self.mode = await self._connect()
        except Exception as exc:
            return exc
        return None

    async def _round(self, due: list[str]) -> None:
        todo = set(due)
        lists = self.mode == "list" or (self.mode == "auto" and self._list_usable and len(due) > 1)
        if lists:
            try:
                await self._list(todo)
            except Exception as exc:
                if not _list_unusable(exc):
                    await self._fail(todo, exc)  # e.g. 429 or 5xx after the hook's retries: asked again next round
                    return
                if self.mode == "auto" and self._list_usable:
                    self._list_usable = False
                    log.warning(
                        "Connection %r does not serve a usable GET /batches (%s); its triggers ask for each batch "
                        "with GET /batches/{id} instead",
                        self.conn_id,
                        exc,
                    )
        await self._retrieve_each(todo)
        log.debug(
            "Learned the status of %d batch(es) on %r; requests so far: %s", len(due), self.conn_id, self.requests
        )

    async def _list(self, todo: set[str]) -> None:
        """Read the pages that hold ``todo`` and hand over what they report; found ids leave ``todo``."""
        threshold = 1 if self.mode == "list" else 2
        targets: dict[str, set[str]] = collections.defaultdict(set)
        for batch_id in todo:
            if batch_id not in self._unlisted:
                targets[self._page_of.get(batch_id, TOP)].add(batch_id)
        # A page worth reading holds at least `threshold` of the batches; fewer pages than batches overall.
        starts = [cursor for cursor, ids in targets.items() if len(ids) >= threshold]
        starts.sort(key=lambda cursor: -len(targets[cursor]))
        budget = [MAX_PAGES if self.mode == "list" else len(todo) - 1]
        starts = starts[: budget[0]]
        if not starts:
            return
        budget[0] -= len(starts)
        chains = [self._chain(cursor, targets, todo, budget, set(starts), threshold) for cursor in starts]
        await asyncio.gather(*chains)

    async def _chain(
        self,
        cursor: str,
        targets: dict[str, set[str]],
        todo: set[str],
        budget: list[int],
        started: set[str],
        threshold: int,
    ) -> None:
        """Read the page after ``cursor``, then further down while the batches it was for are further down."""
        wanted = targets[cursor]
        while True:
            answer = await self._page(cursor)
            async with self._handing:  # pages that arrive together are parsed and handed over one at a time
                await asyncio.sleep(0)
                page = BatchPage.from_dict(answer)
                ready, ours = self._read_page(page, cursor, todo)
                await self._hand_over(ready)
            wanted -= {batch.id for batch in ready}
            last = page.data[-1] if page.data else None
            further = {
                batch_id
                for batch_id in wanted
                if batch_id in todo
                and last is not None
                # Not on this page but newer than its last batch: the list left it out (asked for on its own).
                and (self._created.get(batch_id) is None or self._created[batch_id] <= (last.created_at or 0))
            }
            unknown_position = [b for b in further if b not in self._created]
            if unknown_position and ours < 2:
                # Looking for batches never seen before: go on only while the pages keep finding waited-on ones.
                further -= set(unknown_position)
            self._unlisted.update(wanted - further)
            if (
                last is None
                or not page.has_more
                or len(further) < threshold
                or budget[0] <= 0
                or last.id in started  # the next page is being read already
            ):
                self._unlisted.update(further)
                return
            budget[0] -= 1
            cursor = last.id
            started.add(cursor)
            wanted = further

    async def _page(self, cursor: str) -> dict[str, Any]:
        async with self._limit:
            self.requests["list"] += 1
            return await self.hook.alist_batches_json(after=cursor or None, limit=PAGE_SIZE)

    def _read_page(self, page: BatchPage, cursor: str, todo: set[str]) -> tuple[list[Batch], int]:
        """This round's batches on the page (they leave ``todo``), and how many waited-on batches it holds (also
        those whose triggers joined after the round began: where they are is learned for the next round)."""
        found: list[Batch] = []
        ours = 0
        for batch in page.data:
            if batch.id not in self._subscribers:
                continue
            ours += 1
            self._page_of[batch.id] = cursor
            self._unlisted.discard(batch.id)
            if batch.created_at is not None:
                self._created[batch.id] = batch.created_at
            if batch.id in todo:
                todo.discard(batch.id)
                found.append(batch)
        return found, ours

    async def _hand_over(self, batches: list[Batch]) -> None:
        """Wake the triggers of ``batches`` a slice at a time, each slice running before the next is woken."""
        for start in range(0, len(batches), WAKE_SLICE):
            for batch in batches[start : start + WAKE_SLICE]:
                self._deliver(batch.id, batch)
            await asyncio.sleep(0)

    async def _retrieve_each(self, todo: set[str]) -> None:
        if not todo:
            return
        queue = collections.deque(todo)

        async def worker() -> None:
            while queue:
                batch_id = queue.popleft()
                try:
                    async with self._limit:
                        self.requests["retrieve"] += 1
                        batch = await self.hook.aretrieve_batch(batch_id)
                except Exception as exc:  # this batch's own failure (e.g. it disappeared): its triggers get it
                    self._deliver(batch_id, exc)
                else:
                    self._deliver(batch_id, batch)

        await asyncio.gather(*(worker() for _ in range(min(self._concurrency, len(queue)))))

    # -- handing over ------------------------------------------------------------------------------

    def _deliver(self, batch_id: str, outcome: Batch | BaseException) -> None:
        if isinstance(outcome, Batch) and outcome.created_at is not None:
            self._created[batch_id] = outcome.created_at
        futures = self._waiting.get(batch_id)
        if not futures:
            return
        for future in futures:
            if future.done():  # its trigger was cancelled
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        futures.clear()

    async def _fail(self, batch_ids: Iterable[str], exc: BaseException) -> None:
        for number, batch_id in enumerate(list(batch_ids), start=1):
            self._deliver(batch_id, exc)
            if number % WAKE_SLICE == 0:
                await asyncio.sleep(0)


def _list_unusable(exc: BaseException) -> bool:
    """Whether a failed list request means the service has no usable ``GET /batches`` (some gateways).

    A garbled or HTML answer is not enough: a proxy's error page is answered so too, and passes.
    """
    if isinstance(exc, (NotFoundError, BadRequestError, ValueError)):  # ValueError: items that are no batches
        return True
    return isinstance(exc, OpenAIBatchAPIError) and exc.status_code in (405, 501)

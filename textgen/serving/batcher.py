"""Batcher: concurrent predict requests merged into one call, as TF Serving's --enable_batching.

Requests wait in one queue per model. A worker takes the first, then keeps taking requests
until the batch holds `max_batch` rows or `timeout_s` has passed since the first arrived. The
batch is split into groups that can share a call (`ServedModel.merge_key`: the same signature
and scalar inputs; for text generation, prompts of one length); each group is one call with
its rows concatenated, padded up to the next power of two (TF Serving's allowed_batch_sizes:
XLA compiles once per batch size, a second or so each, so a few sizes keep compiling out of the
way; `--warmup` compiles them before the server takes requests), and
each request gets its own rows back. While a call runs, the next batch fills, so under load
batches grow by themselves.

Requests that must be answered exactly as alone are never merged: one that gives a `seed`
(a row's random draws depend on the batch it is in) and one whose merged call fails (a bad
image, an unknown label): that group is retried one request at a time, so one bad request
cannot fail its neighbours.

The queue holds at most `max_queue` requests; one more is refused with 503 and Retry-After.
Calls run on one thread per model: TensorFlow uses every core inside a call, and one call at a
time keeps latency predictable.
"""

import asyncio
import concurrent.futures
import itertools
import time

import numpy as np

from textgen.serving.tensor_json import RequestError


def pad_rows(array, rows):
    """`array` [B, ...] padded to `rows` rows by repeating its last row (the padding's outputs
    are dropped)."""
    if len(array) >= rows:
        return array
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def padded_rows(rows):
    """The batch size a call of `rows` rows runs at: the next power of two."""
    return 1 << (max(1, rows) - 1).bit_length()


class Pending:
    def __init__(self, signature, inputs, key, rows, future):
        self.signature, self.inputs, self.key, self.rows = signature, inputs, key, rows
        self.future = future
        self.arrived = time.monotonic()


class Batcher:
    """Merges requests for one ServedModel.

    Args:
        model: the ServedModel.
        max_batch: most rows per call (1: batching off, every request its own call).
        timeout_s: how long the first request of a batch waits for others.
        max_queue: most requests waiting; more are refused (503).
        metrics: a ServerMetrics.
    """

    def __init__(self, model, max_batch, timeout_s, max_queue, metrics):
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.timeout_s = timeout_s
        self.queue = asyncio.Queue(maxsize=max_queue)
        self.metrics = metrics
        self.executor = concurrent.futures.ThreadPoolExecutor(1, f"model-{model.name}")
        self.carried = []  # taken from the queue but not yet run (another group's turn)
        self.worker = None
        self.unique = itertools.count()

    async def predict(self, signature, inputs, mergeable=True):
        """The outputs of `signature` for `inputs` (numpy), computed with other requests' rows
        where `mergeable` and their merge keys agree."""
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self.run())
        batched = self.model.batched_inputs(signature)
        rows = len(inputs[batched[0]]) if batched else 0
        key = self.model.merge_key(signature, inputs)
        if not mergeable or not batched or self.max_batch == 1:
            key = (key, next(self.unique))  # never merged
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Pending(signature, inputs, key, rows, future))
        except asyncio.QueueFull:
            raise RequestError(
                f"the queue of model {self.model.name} is full ({self.queue.maxsize} requests); "
                "retry shortly",
                status=503,
            ) from None
        self.metrics.queue_depth.labels(self.model.name).set(self.depth())
        return await future

    def depth(self):
        return self.queue.qsize() + len(self.carried)

    async def run_in_thread(self, function, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, function, *args)

    async def run(self):
        while True:
            batch = await self.collect()
            self.metrics.queue_depth.labels(self.model.name).set(self.depth())
            groups = {}
            for pending in batch:
                groups.setdefault(pending.key, []).append(pending)
            for group in groups.values():
                await self.run_group(group)

    async def collect(self):
        """The next batch: carried-over requests first, then the queue, up to max_batch rows
        or until the first request has waited timeout_s."""
        batch = self.carried or [await self.queue.get()]
        self.carried = []
        rows = sum(p.rows for p in batch)
        deadline = batch[0].arrived + self.timeout_s
        while rows < self.max_batch:
            try:
                pending = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + pending.rows > self.max_batch and rows > 0:
                self.carried.append(pending)
                break
            batch.append(pending)
            rows += pending.rows
        return batch

    async def run_group(self, group):
        live = [p for p in group if not p.future.done()]  # a client may have gone
        if not live:
            return
        try:
            outputs = await self.run_in_thread(self.call_merged, live)
        except RequestError as error:
            if len(live) > 1:  # one bad request must not fail its neighbours
                for pending in live:
                    await self.run_group([pending])
                return
            if not live[0].future.done():
                live[0].future.set_exception(error)
            return
        except Exception as error:  # noqa: BLE001 - answered as a 500, the server goes on
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(live, outputs):
            if not pending.future.done():
                pending.future.set_result(result)

    def call_merged(self, group):
        """One call for the group (on the model thread); each request's own rows back."""
        signature = group[0].signature
        batched = self.model.batched_inputs(signature)
        rows = [p.rows for p in group]
        total = sum(rows)
        self.metrics.batch_size.labels(self.model.name).observe(total)
        padded = padded_rows(total)
        if len(group) == 1 and (not batched or padded == total):
            return [self.model.call(signature, group[0].inputs)]
        inputs = dict(group[0].inputs)
        for name in batched:
            inputs[name] = pad_rows(np.concatenate([p.inputs[name] for p in group]), padded)
        outputs = self.model.call(signature, inputs)
        split_outputs = self.model.batched_outputs(signature)
        results, start = [], 0
        for count in rows:
            results.append(
                {
                    name: value[start : start + count] if name in split_outputs else value
                    for name, value in outputs.items()
                }
            )
            start += count
        return results

    def close(self):
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

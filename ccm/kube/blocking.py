"""The ccm client for synchronous code: set-up scripts, the control-plane launcher, the bench's load
threads and the chaos workload.

:class:`BlockingClient` runs one :class:`ccm.kube.client.KubeClient` on an event loop of its own in
a daemon thread; each call from any thread hands its request to that loop and waits for the answer
(bounded by the request timeout). So synchronous tooling shares the daemon's request path —
kubeconfig, TLS, credentials, ``Retry-After`` retries, error translation — instead of a client of
its own. It does not throttle unless ``qps`` is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from ccm import errors
from ccm.kube.client import KubeClient

__all__ = ["BlockingClient"]

_T = TypeVar("_T")
#: Time the loop thread gets beyond the request timeout before a caller gives up waiting.
_SLACK_SECONDS = 10.0

_Job = tuple[Callable[[], Awaitable[Any]], "concurrent.futures.Future[Any]"]


class BlockingClient:
    """A :class:`KubeClient` behind blocking calls; close it (or use ``with``) when done."""

    def __init__(
        self,
        kubeconfig: str,
        *,
        user_agent: str = "ccm-tooling",
        qps: float = 0.0,
        burst: int = 1,
        request_timeout: float = 30.0,
    ) -> None:
        self._timeout = request_timeout
        self._ready: concurrent.futures.Future[KubeClient] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: asyncio.Queue[_Job | None] | None = None
        self._ids = itertools.count(1)
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(kubeconfig, user_agent, qps, burst, request_timeout),),
            name="ccm-blocking-client",
            daemon=True,
        )
        self._thread.start()
        self._client = self._ready.result(timeout=request_timeout + _SLACK_SECONDS)

    async def _serve(
        self, kubeconfig: str, user_agent: str, qps: float, burst: int, request_timeout: float
    ) -> None:
        try:
            client = await KubeClient.connect(
                kubeconfig=kubeconfig,
                user_agent=user_agent,
                qps=qps,
                burst=burst,
                request_timeout=request_timeout,
            )
        except Exception as exc:  # a bad configuration: the constructor raises it
            self._ready.set_exception(exc)
            return
        self._loop = asyncio.get_running_loop()
        self._jobs = asyncio.Queue()
        self._ready.set_result(client)
        try:
            async with asyncio.TaskGroup() as tasks:
                while (job := await self._jobs.get()) is not None:
                    tasks.create_task(self._run(*job), name=f"blocking-request-{next(self._ids)}")
        finally:
            await client.aclose()

    @staticmethod
    async def _run(call: Callable[[], Awaitable[Any]], out: concurrent.futures.Future[Any]) -> None:
        if not out.set_running_or_notify_cancel():
            return
        try:
            out.set_result(await call())
        except Exception as exc:  # handed to the waiting caller
            out.set_exception(exc)

    def call(
        self, call: Callable[[KubeClient], Awaitable[_T]], *, timeout: float | None = None
    ) -> _T:
        """Run ``call(client)`` on the client's loop and return its result (or raise its error);
        ``timeout``: the longest request it makes, if longer than the client's."""
        if self._loop is None or self._jobs is None or not self._thread.is_alive():
            raise errors.KubeError("the blocking client is closed")
        out: concurrent.futures.Future[_T] = concurrent.futures.Future()
        job: _Job = (lambda: call(self._client), out)
        self._loop.call_soon_threadsafe(self._jobs.put_nowait, job)
        try:
            return out.result(timeout=max(timeout or 0.0, self._timeout) + _SLACK_SECONDS)
        except TimeoutError:
            out.cancel()
            raise errors.KubeError("no answer from the client's event loop in time") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        accept: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """``(HTTP status, body)`` of one request; ``body`` (not bytes) is sent as JSON."""
        raw: bytes | None
        if body is None or isinstance(body, bytes):
            raw = body
        else:
            raw = orjson.dumps(body)
            content_type = content_type or "application/json"
        return self.call(
            lambda c: c.raw(
                method,
                path,
                body=raw,
                content_type=content_type,
                accept=accept,
                request_timeout=timeout,
            ),
            timeout=timeout,
        )

    @property
    def host(self) -> str:
        return self._client.host

    def close(self) -> None:
        if self._loop is not None and self._jobs is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._jobs.put_nowait, None)
        self._thread.join(timeout=self._timeout + _SLACK_SECONDS)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The job document read the way pollers need it: `GET /v1/jobs/{id}` and the event streams call it many
times a second per job, so it is the one read that skips the ORM and the thread pool.

PostgreSQL: one SELECT (compiled once by SQLAlchemy) on psycopg's asyncio connections, on the event loop
itself: no thread hand-over, no wait for the GIL while uploads parse in the thread pool, about a fifth of
the CPU of the same read through SQLAlchemy's asyncio layer. A few connections per API process (pollers
beyond wait for one, instead of opening new PostgreSQL backends), in autocommit (no BEGIN/ROLLBACK around
one SELECT), and no ping before each read: a connection the server dropped is retried once on a fresh
one, so a database restart costs no failed poll, and an outage is a 503 like any other route's.
SQLite (the embedded default): the shared engine, in a thread."""
from __future__ import annotations

import asyncio

import psycopg
from anyio import CapacityLimiter, to_thread
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.exc import OperationalError

from core.documents import JobOut, document_query, job_document, read_job_document


class _Connections:
    """Up to `size` autocommit connections of one event loop."""

    def __init__(self, conninfo: str, size: int):
        self.conninfo, self.idle, self.slots = conninfo, [], asyncio.Semaphore(size)

    async def fetchone(self, sql: str, params: dict) -> tuple | None:
        async with self.slots:
            try:
                return await self._fetchone(sql, params, fresh=False)
            except psycopg.OperationalError:   # dropped while idle (restart, idle timeout): once more
                try:
                    return await self._fetchone(sql, params, fresh=True)
                except psycopg.OperationalError as exc:   # the database is down: 503 (api/app.py)
                    raise OperationalError(sql, params, exc) from None

    async def _fetchone(self, sql: str, params: dict, fresh: bool) -> tuple | None:
        conn = self.idle.pop() if self.idle and not fresh else \
            await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, connect_timeout=10)
        done = False
        try:
            row = await (await conn.execute(sql, params)).fetchone()
            done = True
            return row
        finally:   # a connection in an unknown state (error, cancelled request) is not reused
            if done:
                self.idle.append(conn)
            else:
                await conn.close()

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()


class DocumentReads:
    # 16 reads at once per process: on a CPU-starved host each read waits long for PostgreSQL, and with 8 the
    # bench's 200 polls/s queued for seconds (24: 0.4 s); PostgreSQL's max_connections bounds it from above.
    def __init__(self, engine: Engine, concurrency: int = 16):
        self.engine, self.concurrency = engine.execution_options(isolation_level="AUTOCOMMIT"), concurrency
        self.limiter = CapacityLimiter(concurrency)
        self.on_loop = engine.dialect.name == "postgresql"
        if self.on_loop:
            query = document_query()
            compiled = query.compile(dialect=psycopg_dialect())
            self.sql, self.binds = str(compiled), compiled.params
            self.keys = [column.key for column in query.selected_columns]
            self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: _Connections | None = None

    def read(self, owner: str, job_id: str) -> JobOut | None:
        with self.engine.connect() as conn:
            return read_job_document(conn, owner, job_id)

    def _pool(self) -> _Connections:
        """Asyncio connections belong to the loop that made them (one per API process; tests run an app on
        several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._connections = loop, _Connections(self.conninfo, self.concurrency)
        return self._connections

    async def document(self, owner: str, job_id: str) -> JobOut | None:
        """None: unknown id or another tenant's."""
        if not self.on_loop:
            return await to_thread.run_sync(self.read, owner, job_id, limiter=self.limiter)
        row = await self._pool().fetchone(self.sql, {**self.binds, "job_id": job_id, "owner": owner})
        return job_document(dict(zip(self.keys, row))) if row is not None else None

    async def aclose(self) -> None:
        if self._connections is not None and self._loop is asyncio.get_running_loop():
            await self._connections.close()
        self._loop = self._connections = None

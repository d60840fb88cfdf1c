"""Engine and session factory."""
from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # API threads, the reaper and workers share one file: wait on locks
        # instead of failing, and let readers proceed during writes (WAL).
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pool_pre_ping: a PostgreSQL restart or idle-connection drop is retried
    # transparently instead of surfacing as a failed request or job.
    # Sized for the API's threadpool (40 threads by default) so that sync routes
    # never wait on the pool under load.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40, pool_timeout=10)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)

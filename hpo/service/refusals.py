"""PostgreSQL refusing a connection for want of a slot: how to tell, and saying so once.

A server at its ``max_connections``, or a database or role at its ``CONNECTION
LIMIT``, refuses new sessions until others end. That passes, so the service
waits it out with backoff (hpo/service/db.py ``retrying``); what this module
adds is recognising it in the driver's words, naming the refusing server, and
logging it once per worker process per outage instead of once per retry.
"""

from __future__ import annotations

import re
import threading
import time


def _driver_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else ""


# PostgreSQL's words when it has no connection slot left for a new session: the
# server's max_connections ("sorry, too many clients already"; "remaining
# connection slots are reserved ..." once only the superuser reserve is left)
# or a database's or role's CONNECTION LIMIT ("too many connections for
# database/role ..."). Slots come free as other sessions end, so a refused
# worker waits with backoff instead of failing; SQLSTATE 53300 when the
# driver has it (psycopg has none for a refused connection attempt).
REFUSALS = ("too many clients already", "too many connections for",
            "remaining connection slots are reserved")
TOO_MANY_CONNECTIONS = "53300"


def refused_connection(err: BaseException) -> str | None:
    """PostgreSQL's reason when ``err`` is a connection refused for want of a slot, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        driver = getattr(err, "orig", None) or err
        text = _driver_line(driver)
        if getattr(driver, "sqlstate", None) == TOO_MANY_CONNECTIONS or any(
                needle in text.lower() for needle in REFUSALS):
            # The server's own words, without libpq's "connection to server at ... failed:".
            return re.split(r"FATAL:\s*", text)[-1].strip()
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


def refused_where(err: BaseException) -> str:
    """The refusing server and database, user@host:port/db, from the driver's connection
    attempt (psycopg keeps it on the error); the SQLAlchemy URL is not at hand here."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        pgconn = getattr(getattr(err, "orig", None) or err, "pgconn", None)
        if pgconn is not None:
            try:
                parts = [(getattr(pgconn, k) or b"").decode() for k in ("user", "host", "port", "db")]
            except Exception:  # noqa: BLE001 -- naming the server is a courtesy, never a failure
                break
            return "postgresql://{}@{}:{}/{}".format(*parts)
        err = err.__cause__
    return "(PostgreSQL)"


class _Outages:
    """When to say that connections are refused: once per worker process per outage.

    Every thread's retrying() loop sees the same refusals; the first one after
    OUTAGE_GAP seconds without any is a new outage and is logged, the rest are
    not (backoff tops out at 10 s, far below the gap).
    """

    OUTAGE_GAP = 60.0

    def __init__(self):
        self.lock = threading.Lock()
        self.last: float | None = None

    def starts_now(self) -> bool:
        with self.lock:
            now = time.monotonic()
            first = self.last is None or now - self.last > self.OUTAGE_GAP
            self.last = now
            return first


REFUSED = _Outages()


def note_refusal(err: BaseException, log) -> bool:
    """True when ``err`` is a refused connection; the first of an outage is logged in one line.

    For every place that waits out database errors (retrying(), the heartbeats),
    so an outage of slots is one line per worker, not one per retry.
    """
    refused = refused_connection(err)
    if refused is None:
        return False
    if REFUSED.starts_now():
        log.warning("storage %s: PostgreSQL refused a connection (%s: max_connections or the "
                    "database's connection limit is reached); retrying with backoff",
                    refused_where(err), refused)
    return True

"""The database a ``tune`` study lives in: its URL as the user may write it, and the lock its workers take turns
under.

Optuna's storage has no "start a trial only if fewer than N are claimed" operation, so the workers decide that
themselves, one at a time, under a lock that every worker of the study sees: with PostgreSQL, an advisory lock in
the database (workers on any machine take turns, and a killed worker's lock goes with its connection); with SQLite,
a file lock beside the database file (SQLite is a file on one machine). Another database falls back to a file lock
in the study folder, which only the workers of one machine share.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from mnist_lit.errors import UserError
from mnist_lit.utils.folders import unwritable_reason

#: PostgreSQL drivers SQLAlchemy knows, each with its import name and the package that installs it.
POSTGRESQL_DRIVERS = {"psycopg2": ("psycopg2", "psycopg2-binary"), "psycopg": ("psycopg", "psycopg[binary]")}
INSTALL_HINT = "pip install psycopg2-binary (or psycopg[binary])"


def parse_url(url: str, option: str = "--storage") -> URL:
    try:
        return make_url(url)
    except ArgumentError as err:
        raise UserError(
            f"{option} {url}: not a database URL ({err}); e.g. postgresql://user:password@host/db."
        ) from err


def storage_url(url: str, option: str = "--storage") -> str:
    """``url`` with a PostgreSQL driver named: a plain ``postgresql://`` gets the one that is installed.

    SQLAlchemy maps a plain ``postgresql://`` to one fixed driver (psycopg2 up to 2.0, psycopg 3 from 2.1), so that
    the same URL fails with "Failed to import DB access module" on a machine with the other one; here the
    installed driver decides, SQLAlchemy's own default first. Other URLs are returned as given.
    """
    parsed = parse_url(url, option)
    if parsed.drivername != "postgresql":
        return url
    default = parsed.get_dialect().driver
    for driver in sorted(POSTGRESQL_DRIVERS, key=lambda d: d != default):
        if importlib.util.find_spec(POSTGRESQL_DRIVERS[driver][0]) is not None:
            return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    raise UserError(f"{option} {shown(url)}: PostgreSQL needs a driver, and none is installed: {INSTALL_HINT}.")


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def driver_hint(url: str) -> str:
    """What to install for ``url``'s driver, when it is one of :data:`POSTGRESQL_DRIVERS`."""
    driver = parse_url(url).get_dialect().driver
    package = POSTGRESQL_DRIVERS.get(driver, (None, None))[1]
    return f"pip install {package}" if package else "install the database's Python driver"


class StudyLock:
    """The lock the workers of study ``name`` in ``url`` hold while they decide whether to start a trial (and while
    they create the database's tables and join the study). ``folder`` is the study folder, for the fallback.

    Use ``with lock:`` for its lifetime (the database connection it keeps), and ``with lock.held():`` for each turn.
    """

    def __init__(self, url: str, name: str, folder: Path) -> None:
        self.url, self.name = url, name
        parsed = parse_url(url)
        self._backend = parsed.get_backend_name()
        self._connection: Any = None
        self._file: Any = None
        if self._backend == "postgresql":
            digest = hashlib.sha256(f"mnist_lit.tune:{name}".encode()).digest()
            self._key = int.from_bytes(digest[:8], "big", signed=True)
            self.where = f"a PostgreSQL advisory lock in {shown(url)}: exact for workers on any machine"
            return
        database = parsed.database if self._backend == "sqlite" else None
        if database and database != ":memory:" and not database.startswith("file:"):
            lock_dir = Path(database).parent
            problem = unwritable_reason(lock_dir)
            if problem:
                raise UserError(f"--storage {url}: the database's folder {lock_dir} cannot be written: {problem}.")
            self._lock_path = lock_dir / ".tune.lock"
            self.where = f"a file lock beside {database}: exact for the workers that share that file"
        else:
            self._lock_path = folder / ".tune.lock"
            self.where = (
                f"a file lock in {folder}: exact among the workers of this machine only (PostgreSQL and SQLite lock "
                "in the database itself)"
            )

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection.engine.dispose()
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """This worker's turn: no other worker of the study holds the lock until the block ends."""
        if self._backend == "postgresql":
            connection = self._connect()
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            return
        if self._file is None:
            self._file = open(self._lock_path, "a")  # kept open for the lock's lifetime
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def _connect(self) -> Any:
        """The connection the advisory lock lives on (a session lock: released when the process dies)."""
        if self._connection is None:
            try:
                engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
                self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            except ImportError as err:
                raise UserError(f"--storage {shown(self.url)}: {err}; {driver_hint(self.url)}.") from err
            except SQLAlchemyError as err:  # no server, wrong password, no such database, ...
                raise UserError(f"--storage {shown(self.url)}: cannot connect ({type(err).__name__}: {err}).") from err
        return self._connection

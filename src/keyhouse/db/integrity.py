"""Which constraint violations are conflicts with what is stored, and which are bugs.

A unique or foreign key violation is what two requests at the same moment
can cause (the other one stored the name, or removed the row): a 409. A NOT
NULL or CHECK violation is keyhouse writing what it must not: a 500.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

__all__ = ["is_conflict"]

# unique_violation, foreign_key_violation
# (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_SQLSTATES = frozenset({"23505", "23503"})
# SQLITE_CONSTRAINT_PRIMARYKEY, _UNIQUE, _FOREIGNKEY (https://www.sqlite.org/rescode.html)
_SQLITE_CODES = frozenset({1555, 2067, 787})


def is_conflict(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a unique or foreign key violation, on either engine."""
    sqlstate = getattr(exc.orig, "sqlstate", None)  # asyncpg, through SQLAlchemy's adapter
    if sqlstate is not None:
        return sqlstate in _SQLSTATES
    return getattr(exc.orig, "sqlite_errorcode", None) in _SQLITE_CODES

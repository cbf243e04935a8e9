"""What one process holds for its lifetime: settings, database, key material.

Built by ``create_app``'s lifespan and by the CLI, then handed to services;
nothing here is global. A serving process also runs background loops
(``start``): the ``lastUsedAt`` and usage flushes, the purge of expired
idempotency records, the audit log's retention
(``KEYHOUSE_EVENTS_RETENTION_DAYS``) and, on PostgreSQL, the change
listener; ``close`` stops them and writes what is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from keyhouse.admin_tokens import AdminTokens, VerifyTokens, load_admin_tokens, load_verify_tokens
from keyhouse.audit.retention import run_retention
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.notify import ChangeListener
from keyhouse.errors import ConfigurationError
from keyhouse.idempotency.purge import run_purge
from keyhouse.keys.cache import KeyCache
from keyhouse.keys.crypto import Keyring, load_keyring
from keyhouse.keys.format import KeyFormat
from keyhouse.keys.last_used import LastUsed
from keyhouse.limits.failures import FailedAuthLimiter
from keyhouse.limits.limiter import Limiter, Mode
from keyhouse.logs import get_logger

__all__ = ["Runtime", "load_secrets"]


def load_secrets(settings: Settings, *, generate: bool) -> tuple[Keyring, AdminTokens]:
    """The encryption keys and admin tokens in force, or one line saying what is missing.

    From the settings, else from the data directory; ``generate``: written
    there first when missing, which only the default database allows
    (``Settings.generates_secrets``).
    """
    missing = settings.missing_secrets()
    if missing:
        raise ConfigurationError(
            f"{' and '.join(missing)} must be set with KEYHOUSE_DATABASE_URL: keyhouse "
            "generates no secret for a database outside its data directory (use the "
            "values the server has; README, Running in production)"
        )
    generate = generate and settings.generates_secrets
    keyring = load_keyring(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.data_dir,
        generate=generate,
    )
    admin_tokens = load_admin_tokens(
        settings.admin_tokens.get_secret_value() if settings.admin_tokens else None,
        settings.data_dir,
        generate=generate,
    )
    return keyring, admin_tokens


log = get_logger("keyhouse")


@dataclass(slots=True)
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    key_format: KeyFormat
    admin_tokens: AdminTokens
    cache: KeyCache
    last_used: LastUsed
    limiter: Limiter
    # None on SQLite: no NOTIFY there, changes reach other processes within the cache TTL.
    change_listener: ChangeListener | None
    failed_auth: FailedAuthLimiter
    # KEYHOUSE_VERIFY_TOKENS: POST /verify only; None when unset.
    verify_tokens: VerifyTokens | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, generate_secrets: bool = True) -> Runtime:
        """The process's objects; nothing connects yet.

        ``generate_secrets`` False (the CLI's commands but ``serve``,
        ``migrate`` and ``init``): a missing generated secret is an error.
        """
        keyring, admin_tokens = load_secrets(settings, generate=generate_secrets)
        db = Database(settings)
        cache = KeyCache(settings.cache_max_entries, settings.cache_ttl_seconds)
        mode: Mode = (
            "redis" if settings.redis_url else "database" if settings.workers > 1 else "memory"
        )
        return cls(
            settings=settings,
            db=db,
            keyring=keyring,
            key_format=KeyFormat(settings.key_prefix_secret, settings.key_prefix_public),
            admin_tokens=admin_tokens,
            verify_tokens=load_verify_tokens(
                settings.verify_tokens.get_secret_value() if settings.verify_tokens else None,
                admin_tokens,
            ),
            cache=cache,
            last_used=LastUsed(),
            limiter=Limiter(db, mode=mode, redis_url=settings.redis_url),
            failed_auth=FailedAuthLimiter(settings.auth_failures_per_minute),
            change_listener=None
            if db.is_sqlite
            else ChangeListener(db.asyncpg_dsn, cache, timeout=settings.db_connect_timeout_seconds),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, settings: Settings) -> AsyncIterator[Runtime]:
        """A serving process's runtime, started, and closed on leaving: the lifespan of
        ``create_app`` and of ``create_gateway_app`` alike."""
        runtime = cls.build(settings)
        runtime.start()
        try:
            yield runtime
        finally:
            await runtime.close()

    def start(self) -> None:
        """Start the background loops of a serving process (the CLI runs none)."""
        settings = self.settings
        loops = [
            self.last_used.run(self.db, settings.last_used_flush_seconds),
            self.limiter.run(settings.usage_flush_seconds),
            run_purge(self.db),
        ]
        if settings.events_retention_days is not None:
            loops.append(run_retention(self.db, settings.events_retention_days))
        if self.change_listener is not None:
            loops.append(self.change_listener.run())
        self._tasks = [asyncio.create_task(loop) for loop in loops]

    async def close(self) -> None:
        """Stop the loops, write what is pending, then let the database go.

        Graceful shutdown (SIGTERM/SIGINT in uvicorn) ends here, so no use
        or count is lost.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Each step on its own: the database being gone at shutdown (what
        # pending uses need) must not keep the limiter from closing, nor
        # turn a stop into a traceback. What could not be written is lost,
        # as in a crash, and said in the log.
        steps = {
            "last_used_flush": lambda: self.last_used.flush(self.db),
            "limiter_close": self.limiter.close,
        }
        try:
            for name, step in steps.items():
                try:
                    await step()
                except Exception as exc:
                    log.warning("shutdown_step_failed", step=name, error=type(exc).__name__)
        finally:
            await self.db.dispose()

"""What one process holds for its lifetime: settings, database, key material.

Built by ``create_app``'s lifespan and by the CLI, then handed to services;
nothing here is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyhouse.admin_tokens import AdminTokens, load_admin_tokens
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.notify import ChangeListener
from keyhouse.keys.cache import KeyCache
from keyhouse.keys.crypto import Keyring, load_keyring
from keyhouse.keys.format import KeyFormat
from keyhouse.keys.last_used import LastUsed
from keyhouse.limits.failures import FailedAuthLimiter
from keyhouse.limits.limiter import Limiter, Mode

__all__ = ["Runtime"]


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
    change_listener: ChangeListener
    failed_auth: FailedAuthLimiter

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        keyring = load_keyring(
            settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
            settings.data_dir,
        )
        admin_tokens = load_admin_tokens(
            settings.admin_tokens.get_secret_value() if settings.admin_tokens else None,
            settings.data_dir,
        )
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
            cache=cache,
            last_used=LastUsed(),
            limiter=Limiter(db, mode=mode, redis_url=settings.redis_url),
            failed_auth=FailedAuthLimiter(settings.auth_failures_per_minute),
            change_listener=ChangeListener(
                db.asyncpg_dsn if not db.is_sqlite else "",
                cache,
                timeout=settings.db_connect_timeout_seconds,
            ),
        )

    async def close(self) -> None:
        """Write what is pending, then let the database go."""
        try:
            await self.last_used.flush(self.db)
            await self.limiter.close()
        finally:
            await self.db.dispose()

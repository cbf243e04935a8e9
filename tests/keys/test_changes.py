"""``keys.changes``: a key change drops the cache entry now and again after the commit."""

from __future__ import annotations

import pytest

from keyhouse.keys import changes
from keyhouse.runtime import Runtime
from tests.keys.test_cache import record

A, B = b"a" * 32, b"b" * 32


class TestMarkChanged:
    async def test_one_key_is_dropped_now_and_after_the_commit(self, runtime: Runtime) -> None:
        runtime.cache.put(A, record("key_A"))
        runtime.cache.put(B, record("key_B"))
        async with changes.session(runtime, write=True) as session:
            changes.mark_changed(session, runtime, A)
            assert runtime.cache.get(A) == (False, None)
            # A lookup that ran before the commit put the old state back.
            runtime.cache.put(A, record("key_A"))
        assert runtime.cache.get(A) == (False, None)
        assert runtime.cache.get(B)[0]

    async def test_all_clears_now_and_after_the_commit(self, runtime: Runtime) -> None:
        runtime.cache.put(A, record("key_A"))
        async with changes.session(runtime, write=True) as session:
            changes.mark_changed(session, runtime, changes.ALL)
            assert len(runtime.cache) == 0
            runtime.cache.put(B, record("key_B"))
        assert len(runtime.cache) == 0

    async def test_a_rollback_skips_the_after_commit_step(self, runtime: Runtime) -> None:
        async def change_then_fail() -> None:
            async with changes.session(runtime, write=True) as session:
                changes.mark_changed(session, runtime, A)
                runtime.cache.put(A, record("key_A"))
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await change_then_fail()
        # Nothing changed, so the entry read meanwhile may stay.
        assert runtime.cache.get(A)[0]

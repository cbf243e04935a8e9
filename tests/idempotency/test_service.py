"""``idempotency/service.py``: what makes two requests one, and a claim's transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from keyhouse import errors
from keyhouse.idempotency.service import IdempotencyService, fingerprint, parse_key
from keyhouse.models import IdempotencyRecord
from keyhouse.runtime import Runtime
from tests.factories import raises, rolled_back


class TestFingerprint:
    def test_json_member_order_and_spacing_do_not_count(self) -> None:
        a = fingerprint("POST", "/keys", b"", b'{"name":"k","keyType":"public"}')
        b = fingerprint("POST", "/keys", b"", b'{ "keyType" : "public", "name" : "k" }\n')
        assert a == b

    @pytest.mark.parametrize(
        ("method", "path", "query", "body"),
        [
            ("PATCH", "/keys", b"", b'{"name":"k"}'),
            ("POST", "/environments", b"", b'{"name":"k"}'),
            ("POST", "/keys", b"force=true", b'{"name":"k"}'),
            ("POST", "/keys", b"", b'{"name":"K"}'),
            ("POST", "/keys", b"", b""),
        ],
    )
    def test_method_path_query_and_body_count(
        self, method: str, path: str, query: bytes, body: bytes
    ) -> None:
        assert fingerprint("POST", "/keys", b"", b'{"name":"k"}') != fingerprint(
            method, path, query, body
        )

    def test_parts_cannot_run_into_each_other(self) -> None:
        assert fingerprint("POST", "/keys", b"a", b"") != fingerprint("POST", "/keysa", b"", b"")

    def test_a_body_that_is_not_json_counts_as_bytes(self) -> None:
        deep = b"[" * 100_000
        assert fingerprint("POST", "/keys", b"", deep) == fingerprint("POST", "/keys", b"", deep)
        assert fingerprint("POST", "/keys", b"", b"{") != fingerprint("POST", "/keys", b"", b"{ ")


class TestParseKey:
    def test_absent_is_none(self) -> None:
        assert parse_key([]) is None

    def test_printable_ascii_up_to_255(self) -> None:
        assert parse_key(["a" * 255]) == "a" * 255
        assert parse_key([" ~!"]) == " ~!"

    @pytest.mark.parametrize("value", ["", "a" * 256, "new\nline", "\x7f", "caf\xe9"])
    def test_anything_else_is_400(self, value: str) -> None:
        with raises(errors.BadRequest, "validation_error"):
            parse_key([value])

    def test_twice_is_400(self) -> None:
        with raises(errors.BadRequest, "validation_error"):
            parse_key(["a", "a"])


class TestClaims:
    async def test_a_claim_rolled_back_leaves_nothing(self, runtime: Runtime) -> None:
        print_ = fingerprint("POST", "/keys", b"", b"{}")
        async with rolled_back(runtime) as session:
            service = IdempotencyService(session, runtime)
            assert await service.begin("admin", "k1", print_) is None
            await service.finish("admin", "k1", 201, b'{"id":"x"}')
        async with runtime.db.session(write=False) as session:
            count = await session.scalar(select(func.count()).select_from(IdempotencyRecord))
        assert count == 0

    async def test_a_committed_claim_answers_the_retry(self, runtime: Runtime) -> None:
        print_ = fingerprint("POST", "/keys", b"", b"{}")
        async with runtime.db.session(write=True) as session:
            service = IdempotencyService(session, runtime)
            assert await service.begin("admin", "k2", print_) is None
            await service.finish("admin", "k2", 201, b'{"id":"x"}')
        async with runtime.db.session(write=True) as session:
            service = IdempotencyService(session, runtime)
            stored = await service.begin("admin", "k2", print_)
            assert stored is not None
            assert (stored.status_code, stored.body) == (201, b'{"id":"x"}')
            with raises(errors.IdempotencyKeyReused, "idempotency_key_reused"):
                await service.begin("admin", "k2", fingerprint("POST", "/keys", b"", b"[]"))
            # Another scope is another key.
            assert await service.begin("key:key_x", "k2", print_) is None

    async def test_a_non_2xx_answer_gives_the_key_up(self, runtime: Runtime) -> None:
        print_ = fingerprint("POST", "/keys", b"", b"{}")
        async with runtime.db.session(write=True) as session:
            service = IdempotencyService(session, runtime)
            assert await service.begin("admin", "k3", print_) is None
            await service.finish("admin", "k3", 400, b"{}")
        async with runtime.db.session(write=True) as session:
            assert await IdempotencyService(session, runtime).begin("admin", "k3", print_) is None

    async def test_an_answer_under_a_removed_encryption_key_is_409_not_500(
        self, runtime: Runtime
    ) -> None:
        # After `keyhouse key reencrypt` and removing the old encryption key,
        # a retry of a write answered under it got 500 for 24 hours.
        print_ = fingerprint("POST", "/keys", b"", b"{}")
        async with runtime.db.session(write=True) as session:
            service = IdempotencyService(session, runtime)
            assert await service.begin("admin", "k4", print_) is None
            await service.finish("admin", "k4", 201, b'{"id":"x"}')
        async with runtime.db.session(write=True) as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == "k4")
                .values(enc_kid="removed")
            )
        async with runtime.db.session(write=True) as session:
            with raises(errors.Conflict, "conflict"):
                await IdempotencyService(session, runtime).begin("admin", "k4", print_)

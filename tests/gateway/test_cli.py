"""``keyhouse gateway`` as a command: its options, one line for each mistake, workers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keyhouse.config import Settings
from keyhouse.gateway.upstream import Upstream, check_provider
from tests.gateway.conftest import Upstream as UpstreamServer
from tests.gateway.conftest import gateway_process, new_account
from tests.test_cli import expect_one_line_failure, keyhouse


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--upstream", "ftp://files.example", "--provider", "acme"], "http://host"),
        (["--upstream", "http://user:pw@api.example", "--provider", "acme"], "user name"),
        (["--upstream", "http://api.example/?v=1", "--provider", "acme"], "query"),
        (["--upstream", "http://api.example", "--provider", "acme api"], "provider name"),
        (["--upstream", "http://api.example", "--provider", ""], "provider name"),
    ],
)
def test_a_bad_option_is_one_line(tmp_path: Path, options: list[str], says: str) -> None:
    result = keyhouse(tmp_path / "data", "gateway", *options, "--port", "0")
    line = expect_one_line_failure(result)
    assert says in line, line
    assert not (tmp_path / "data").exists(), "a refused start created a keyhouse"


def test_upstream_and_provider_are_required(tmp_path: Path) -> None:
    result = keyhouse(tmp_path / "data", "gateway")
    assert result.code == 2
    assert "--upstream" in result.err


def test_workers(sqlite_live_settings: Settings, upstream: UpstreamServer) -> None:
    with gateway_process(sqlite_live_settings, upstream.url, "--workers", "2") as live:
        acc = new_account(sqlite_live_settings)
        with httpx.Client(base_url=live.url, headers=acc.auth, timeout=10) as client:
            for i in range(6):
                response = client.get(f"/echo/{i}")
                assert response.status_code == 200
                headers = dict(response.json()["headers"])
                assert headers["x-keyhouse-account-id"] == acc.account_id
            response = client.get("/x", headers={"Authorization": "Bearer nope"})
            assert response.status_code == 401


class TestUpstreamUrl:
    @pytest.mark.parametrize(
        ("given", "base", "prefix"),
        [
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/", b""),
            ("https://api.example/", "https://api.example/", b""),
            ("http://api.example/v1/", "http://api.example/", b"/v1"),
        ],
    )
    def test_parsed(self, given: str, base: str, prefix: bytes) -> None:
        upstream = Upstream.parse(given)
        assert str(upstream.base) == base
        assert upstream.prefix == prefix

    def test_target_keeps_the_request_as_sent(self) -> None:
        upstream = Upstream.parse("http://api.example/v1")
        target = upstream.target(b"/a%2Fb/%E2%9C%93", b"x=1&y=a+b&z=%26")
        assert target.raw_path == b"/v1/a%2Fb/%E2%9C%93?x=1&y=a+b&z=%26"
        assert target.host == "api.example"

    def test_provider_names(self) -> None:
        assert check_provider("acme-api.v2_eu") == "acme-api.v2_eu"
        for bad in ("", "-acme", "a" * 65, "acme api", "acmé", "acme\n"):
            with pytest.raises(ValueError, match="provider name"):
                check_provider(bad)

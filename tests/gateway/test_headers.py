"""Which headers cross the gateway (gateway/headers.py), each way."""

from __future__ import annotations

from keyhouse.gateway.headers import request_headers, response_headers

IDENTITY = {"X-Keyhouse-Account-Id": "acc_1", "X-Keyhouse-Key-Id": "key_1"}


class TestToTheUpstream:
    def test_dropped_replaced_and_added(self) -> None:
        given = [
            (b"host", b"api.example"),
            (b"authorization", b"Bearer sk_x"),
            (b"connection", b"keep-alive, X-Hop"),
            (b"x-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"trailer", b"x"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic x"),
            (b"proxy-whatever", b"x"),
            (b"expect", b"100-continue"),
            (b"x-keyhouse-account-id", b"acc_spoofed"),
            (b"x-keyhouse-anything", b"x"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"forwarded", b"for=1.2.3.4"),
            (b"content-length", b"12"),
            (b"x-kept", b"a"),
            (b"x-kept", b"b"),
        ]
        out = request_headers(given, IDENTITY, client="10.0.0.9", scheme="https")
        assert out == [
            (b"content-length", b"12"),
            (b"x-kept", b"a"),
            (b"x-kept", b"b"),
            (b"x-keyhouse-account-id", b"acc_1"),
            (b"x-keyhouse-key-id", b"key_1"),
            (b"x-forwarded-for", b"10.0.0.9"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"api.example"),
        ]

    def test_what_a_cgi_server_reads_as_ours_is_dropped(self) -> None:
        # wsgiref (and PHP, and other CGI-style servers) map '_' and '-' to one HTTP_*
        # variable: reviewer r14's X_Keyhouse_Environment_Id reached a wsgiref upstream
        # as HTTP_X_KEYHOUSE_ENVIRONMENT_ID=env_VICTIM.
        given = [
            (b"x_keyhouse_account_id", b"acc_VICTIM"),
            (b"x_keyhouse_environment_id", b"env_VICTIM"),
            (b"x-keyhouse_key-id", b"key_VICTIM"),
            (b"x_forwarded_for", b"198.51.100.1"),
            (b"x-forwarded_proto", b"https"),
            (b"x-forwarded-port", b"443"),
            (b"x_forwarded_prefix", b"/admin"),
            (b"x-real-ip", b"198.51.100.1"),
            (b"x_real_ip", b"198.51.100.1"),
            (b"x_api_key", b"sk_the_key"),
            (b"proxy_authorization", b"Basic x"),
            (b"connection", b"x-hop"),
            (b"x_hop", b"1"),
            (b"x_kept", b"a"),
        ]
        out = request_headers(
            given, IDENTITY, client="10.0.0.9", scheme="http", credential_header="X-Api-Key"
        )
        assert out == [
            (b"x_kept", b"a"),
            (b"x-keyhouse-account-id", b"acc_1"),
            (b"x-keyhouse-key-id", b"key_1"),
            (b"x-forwarded-for", b"10.0.0.9"),
            (b"x-forwarded-proto", b"http"),
        ]

    def test_no_client_address_no_forwarded_for(self) -> None:
        out = request_headers([], {}, client=None, scheme="http")
        assert out == [(b"x-forwarded-proto", b"http")]


class TestFromTheUpstream:
    def test_hop_by_hop_and_date_stay_behind(self) -> None:
        given = [
            (b"Content-Type", b"application/json"),
            (b"Connection", b"close, X-Per-Hop"),
            (b"X-Per-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Date", b"Mon, 30 Nov 2026 05:00:00 GMT"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Content-Encoding", b"gzip"),
        ]
        assert response_headers(given) == [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"content-encoding", b"gzip"),
        ]

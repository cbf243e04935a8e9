"""The untested proxy configs (Traefik, Envoy) at least name what keyhouse sends and reads.

No Traefik or Envoy runs here (neither is packaged for Debian); these checks
keep the files in step with keyhouse's header names when those change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyhouse.forward_auth.schemas import FORWARD_TOKEN_HEADER
from keyhouse.http.identity import IDENTITY_HEADERS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize(
    "path",
    ["nginx/keyhouse-forward-auth.conf", "traefik/dynamic/keyhouse.yml", "envoy/envoy.yaml"],
)
def test_each_config_names_the_headers(path: str) -> None:
    text = (DEPLOY / path).read_text().lower()
    for header in [*IDENTITY_HEADERS, FORWARD_TOKEN_HEADER]:
        assert header.lower() in text.replace("_", "-"), header
    assert "/forward-auth" in text
    assert "replace_with_a_verify_token" in text


def test_the_readme_says_which_are_untested() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "untested" in text.lower()
    assert "tests/forward_auth/test_nginx.py" in text

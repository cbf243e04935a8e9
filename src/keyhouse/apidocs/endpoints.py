"""``/docs`` and ``/redoc``: the API reference, with no request leaving keyhouse.

The assets are vendored, unmodified, from the npm registry's packages of the
upstream projects (FastAPI's pages use the same majors from a CDN):

* ``swagger-ui-dist`` 5.35.0 (Apache-2.0, SmartBear): ``swagger-ui-bundle.js``,
  ``swagger-ui.css``, ``favicon-32x32.png``; ``swagger-ui.LICENSE``,
  ``swagger-ui.NOTICE`` and ``swagger-ui-bundle.js.LICENSE.txt`` beside them;
* ``redoc`` 2.5.4 (MIT, Redocly): ``bundles/redoc.standalone.js``;
  ``redoc.LICENSE`` and ``redoc.standalone.js.LICENSE.txt`` beside it.

``make docs-assets`` fetches them again (``npm pack``); ``tests/apidocs``
checks their SHA-256 against ``ASSETS``. A package that ships them was
considered: ``fastapi-offline`` ships no licence of Swagger UI (Apache-2.0
asks for one) and ``fastapi-standalone-docs`` patches FastAPI's module
functions process-wide; neither pins more than a vendored copy does.

The pages are keyhouse's own HTML (no inline script) under a
``Content-Security-Policy`` that allows this origin only: ReDoc 2.5 shows a
logo from ``cdn.redoc.ly`` and Swagger UI asks ``validator.swagger.io`` about
a spec not served from localhost; under the policy the browser sends neither
request (``tests/apidocs/test_pages.py`` counts the requests that leave).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

from keyhouse import errors

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "router"]

_DIR = Path(__file__).parent / "assets"


@dataclass(frozen=True, slots=True)
class Asset:
    file: str
    media_type: str
    sha256: str


# Served as /docs/assets/<name>. Names under 20 characters: the access log
# masks longer path segments (they could be keys).
ASSETS = {
    "swagger-ui.js": Asset(
        "swagger-ui-bundle.js",
        "text/javascript",
        "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    ),
    "swagger-ui.css": Asset(
        "swagger-ui.css",
        "text/css",
        "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    ),
    "redoc.js": Asset(
        "redoc.standalone.js",
        "text/javascript",
        "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b",
    ),
    "favicon.png": Asset(
        "favicon-32x32.png",
        "image/png",
        "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837",
    ),
}

# What Swagger UI runs, as a file: the policy allows no inline script.
# FastAPI's settings (presets, layout, deep links), and no online validator.
_SWAGGER_INIT = b"""window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

# Scripts and styles from this origin only, the spec fetched from it, images
# inline or from it. 'unsafe-inline' styles: Swagger UI sets style
# attributes and ReDoc (styled-components) writes <style> elements; ReDoc
# runs its search in a worker made from a blob: URL.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

# Relative URLs (docs/assets/..., openapi.json): the pages keep working
# behind a proxy that serves keyhouse under a path prefix.
_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>keyhouse API - Swagger UI</title>
<link rel="icon" type="image/png" href="docs/assets/favicon.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui.js"></script>
<script src="docs/assets/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyhouse API - ReDoc</title>
<link rel="icon" type="image/png" href="docs/assets/favicon.png">
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/assets/redoc.js"></script>
</body>
</html>
"""

_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER_PAGE, headers=_HEADERS)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC_PAGE, headers=_HEADERS)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    if name == "swagger-init.js":
        return Response(_SWAGGER_INIT, media_type="text/javascript")
    found = ASSETS.get(name)
    if found is None:
        raise errors.NotFound("No such asset.", fix="See /docs.")
    return FileResponse(_DIR / found.file, media_type=found.media_type)

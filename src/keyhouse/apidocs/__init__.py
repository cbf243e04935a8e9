"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from keyhouse itself.

FastAPI's pages load their scripts from a CDN; in the closed network keyhouse
is meant to run in they were blank (issue 13). The assets are vendored under
``assets/`` (see ``endpoints.ASSETS`` for versions and sources).
"""

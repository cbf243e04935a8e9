"""Gateway mode: keyhouse as a reverse proxy in front of the platform's API.

``keyhouse gateway --upstream URL --provider NAME`` serves ``create_gateway_app``:
every request (any method, path and query) is authenticated and metered by the
pipeline's one authenticator and meter (``http/pipeline.py``: ``get_forward_caller``,
``metered_call``), as a call of the account API, then passed to the upstream
without its ``Authorization`` and with the caller's identity headers
(``http/identity.py``). Bodies stream both ways. The gateway serves no route
of its own: keyhouse's API is ``keyhouse serve``'s, and an admin token is not
an account's key (401 here, never forwarded).

* ``upstream.py``: the upstream's URL, the provider's name, and what a failure
  of the upstream is answered with (502 ``provider_error``);
* ``headers.py``: which headers cross (RFC 9110 section 7.6.1, identity);
* ``app.py``: the ASGI application.
"""

from keyhouse.gateway.app import Gateway, create_gateway_app, gateway_app_from_env

__all__ = ["Gateway", "create_gateway_app", "gateway_app_from_env"]

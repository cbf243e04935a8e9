# Flask (any WSGI app): flask --app flask_app run
import os

from flask import Flask, request
from keyhouse_client import KeyhouseWSGIAuth, identity_of

app = Flask(__name__)
app.wsgi_app = KeyhouseWSGIAuth(  # type: ignore[method-assign]
    app.wsgi_app, os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_VERIFY_TOKEN"]
)


@app.get("/orders")
def orders() -> dict[str, str]:
    identity = identity_of(request.environ)
    assert identity is not None
    return {"account": identity.account_id, "key": identity.key_id}

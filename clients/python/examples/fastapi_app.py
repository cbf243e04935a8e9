# An API that takes keyhouse keys: uvicorn fastapi_app:app
import os

from fastapi import FastAPI
from keyhouse_client import KeyhouseAuth
from keyhouse_client.fastapi import KeyhouseIdentity

app = FastAPI()
app.add_middleware(
    KeyhouseAuth,
    base_url=os.environ["KEYHOUSE_URL"],
    token=os.environ["KEYHOUSE_VERIFY_TOKEN"],
    exclude_paths=["/healthz"],
)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders")
def orders(identity: KeyhouseIdentity) -> dict[str, str]:
    # Only a request with a valid key gets here; the others got 401/402/429.
    return {"account": identity.account_id, "key": identity.key_id}

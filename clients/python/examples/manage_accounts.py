# The operator's side: an account, its keys, a verification, a roll, the audit log.
import os

from keyhouse_client import Keyhouse, KeyhouseError

with Keyhouse(os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_ADMIN_TOKEN"]) as keyhouse:
    # A customer signs up: an account with a plan, and its first secret key.
    created = keyhouse.accounts.create("Acme", limits={"monthlyRequests": 100_000})
    account = created.account
    print("account", account.id, "plan", account.limits.monthly_requests)

    # A public key for their web widget (hand widget.key to the customer).
    widget = keyhouse.keys.create(account.id, "web widget", key_type="public")

    # What your API asks about the key a request brings.
    result = keyhouse.verify(widget.key)
    print("verify:", result.code, result.account_id == account.id)

    # Replace the key; the old one keeps working for an hour.
    rolled = keyhouse.keys.roll(widget.id, expires_in_seconds=3600)
    print("rolled", widget.id, "->", rolled.id)

    try:
        keyhouse.keys.revoke(created.key.id)  # the account's last secret key
    except KeyhouseError as error:
        print("refused:", error.status, error.code)

    for event in keyhouse.events.list(account_id=account.id):  # every page
        print(event.created_at.isoformat(), event.type)

# A customer's own backend, with its secret key: environments, keys, usage, events.
import os

from keyhouse_client import AccountClient

with AccountClient(os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_KEY"]) as acme:
    staging = acme.environments.create("staging")
    backend = acme.keys.create("staging backend", environment_id=staging.id)
    print("new key", backend.id, "in", backend.environment_id)

    for key in acme.keys.list():
        print(key.id, key.key_type, key.name, "revoked" if key.revoked else "active")

    usage = acme.account.get().usage
    print("requests this month:", usage.requests if usage else 0)

    for event in acme.events.list():  # every page, newest first
        print(event.type, event.key_id)

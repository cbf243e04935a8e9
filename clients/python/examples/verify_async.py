# POST /verify from asyncio code, with a verify-only token.
import asyncio
import os

from keyhouse_client import AsyncKeyhouse, KeyhouseUnavailable


async def main() -> None:
    url, token = os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_VERIFY_TOKEN"]
    async with AsyncKeyhouse(url, token) as keyhouse:
        try:
            result = await keyhouse.verify(os.environ["KEYHOUSE_KEY"])
        except KeyhouseUnavailable as error:  # unreachable, or 503 after the retries
            print("keyhouse is unavailable:", error.code)
            return
        if result.valid:
            print("valid key", result.key_id, "of", result.account_id)
        else:
            print("refused:", result.code)  # not_found, revoked, expired, ...


asyncio.run(main())

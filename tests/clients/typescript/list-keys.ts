// Lists an account's keys with a client generated from keyhouse's /openapi.json
// (openapi-typescript's schema.d.ts + openapi-fetch), as a TypeScript platform
// would. Run by tests/clients/test_typescript_client.py: compiled with
// `tsc --strict`, then `node list-keys.js BASE_URL` with the account key in
// KEYHOUSE_KEY (never on the command line, never printed). Prints one JSON
// object: the keys (without their key strings) or the error envelope's members.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type ApiKey = components["schemas"]["ApiKey"];

const baseUrl = process.argv[2];
const key = process.env.KEYHOUSE_KEY;
if (baseUrl === undefined || key === undefined) {
  throw new Error("usage: KEYHOUSE_KEY=sk_... node list-keys.js BASE_URL");
}

const client = createClient<paths>({ baseUrl });
const { data, error, response } = await client.GET("/keys", {
  headers: { Authorization: `Bearer ${key}` },
  params: { query: { keyType: "secret" } },
});

if (error !== undefined) {
  // Every error status of GET /keys is the one ErrorResponse: typed members.
  const detail = error.error;
  console.log(
    JSON.stringify({
      status: response.status,
      trackingIdHeader: response.headers.get("X-Tracking-Id"),
      trackingId: error.trackingId,
      code: detail.code,
      message: detail.message,
      fix: detail.fix ?? null,
    }),
  );
} else {
  const keys: ApiKey[] = data.keys;
  console.log(
    JSON.stringify({
      status: response.status,
      keys: keys.map((k) => ({
        id: k.id,
        accountId: k.accountId,
        keyType: k.keyType,
        name: k.name,
        revoked: k.revoked,
        createdAt: new Date(k.createdAt).toISOString(),
      })),
    }),
  );
}

// Must NOT compile: proves the generated types are real, not `any`.
// tests/clients/test_typescript_client.py asserts tsc rejects both lines.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:1" });
const { data } = await client.GET("/keys");
if (data !== undefined) {
  // No such member: the key object's id is `id`.
  console.log(data.keys[0]?.keyId);
  // `revoked` is a boolean, not a string.
  const revoked: string = data.keys[0]!.revoked;
  console.log(revoked);
}

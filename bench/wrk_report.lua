-- wrk script for bench/run.py: request from the environment, one JSON line at the end.
--   WRK_METHOD        GET (default) or POST
--   WRK_AUTH          the Authorization header's value ("Bearer ...", "Api-Key ...")
--   WRK_BODY          request body (POST /verify: {"key": "..."})
--   WRK_CONTENT_TYPE  Content-Type for the body (default application/json)
-- Secrets come in through the environment so they never appear on a command line.
-- The done hook is the peer harness's (shared/bench/peer_drf/wrk_report.lua).
local method = os.getenv("WRK_METHOD")
if method and method ~= "" then
  wrk.method = method
end
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  local ctype = os.getenv("WRK_CONTENT_TYPE")
  if not ctype or ctype == "" then
    ctype = "application/json"
  end
  wrk.headers["Content-Type"] = ctype
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end

-- Shared by the wrk scripts in bench/: counts failed answers per thread
-- (any status but 200, or a GraphQL body carrying "errors", or a body
-- missing what the scenario expects) and prints one machine-readable line.
--
-- wrk runs one Lua state per thread; setup() keeps a handle on each so
-- done() can add up their counters.

local M = {}
local threads = {}
local next_id = 0

-- expect: a plain substring every good body must contain (nil: any body).
-- expect_header: a header (lower-case name) every good answer must carry,
-- and the value it must have (nil: no header is checked).
function M.install(expect, expect_header, expect_value)
   function setup(thread)
      thread:set("id", next_id)
      next_id = next_id + 1
      table.insert(threads, thread)
   end

   failed = 0
   graphql_errors = 0
   bad_status = 0
   sample = ""

   function response(status, headers, body)
      if status ~= 200 then
         bad_status = bad_status + 1
         failed = failed + 1
         if sample == "" then sample = "status " .. status .. ": " .. string.sub(body or "", 1, 200) end
      elseif body and string.find(body, '"errors"', 1, true) then
         graphql_errors = graphql_errors + 1
         failed = failed + 1
         if sample == "" then sample = string.sub(body, 1, 200) end
      elseif expect and not (body and string.find(body, expect, 1, true)) then
         failed = failed + 1
         if sample == "" then sample = "unexpected body: " .. string.sub(body or "", 1, 200) end
      elseif expect_header and headers[expect_header] ~= expect_value then
         failed = failed + 1
         if sample == "" then
            sample = "header " .. expect_header .. ": " .. tostring(headers[expect_header])
         end
      end
      if M.after_response then M.after_response(status, body) end
   end

   function done(summary, latency, requests)
      local total_failed, total_graphql, total_status = 0, 0, 0
      local first_sample = ""
      for _, thread in ipairs(threads) do
         total_failed = total_failed + (thread:get("failed") or 0)
         total_graphql = total_graphql + (thread:get("graphql_errors") or 0)
         total_status = total_status + (thread:get("bad_status") or 0)
         local s = thread:get("sample") or ""
         if first_sample == "" and s ~= "" then first_sample = s end
      end
      local e = summary.errors
      local socket = e.connect + e.read + e.write + e.timeout
      local seconds = summary.duration / 1e6
      -- Latencies are in microseconds; report milliseconds.
      io.write(string.format(
         "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f " ..
         "failed=%d graphql_errors=%d bad_status=%d wrk_status=%d socket=%d connect=%d read=%d write=%d timeout=%d\n",
         summary.requests, seconds, summary.requests / seconds,
         latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
         total_failed, total_graphql, total_status, e.status, socket,
         e.connect, e.read, e.write, e.timeout))
      if first_sample ~= "" then
         -- Never a token or a password: bodies here are answers, and
         -- answers carry neither except login's token, which only a
         -- successful login (not a failure sample) returns.
         io.write("BENCH_SAMPLE " .. string.gsub(first_sample, "\n", " ") .. "\n")
      end
   end
end

return M

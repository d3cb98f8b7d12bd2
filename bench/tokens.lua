-- memory: resolves every token in BENCH_TOKEN_FILE (one a line) once with
-- `me`, the file split between wrk's threads; each thread stops when its
-- share has been answered (wrk's -d bounds the whole in time).
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local file = assert(os.getenv("BENCH_TOKEN_FILE"), "BENCH_TOKEN_FILE unset")

local mine = {}
local sent = 0
local answered = 0

function init(args)
   local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
   local n = 0
   for line in io.lines(file) do
      if n % threads == id then table.insert(mine, line) end
      n = n + 1
   end
end

function request()
   sent = sent + 1
   -- Past the end (wrk keeps every connection busy until stopped), ask
   -- again for tokens already resolved: cache hits that add nothing.
   local token = mine[((sent - 1) % #mine) + 1]
   return wrk.format("POST", "/graphql", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token,
   }, '{"query":"{ me { id username } }"}')
end

common.install('"username":"')
-- Answers arrive in order on each connection but not across them: wait
-- for one more answer per connection (BENCH_CONNECTIONS, an upper bound on
-- this thread's) before stopping, so every token of the share was answered.
local margin = tonumber(os.getenv("BENCH_CONNECTIONS") or "32")
common.after_response = function(status, body)
   answered = answered + 1
   if answered >= #mine + margin then wrk.thread:stop() end
end

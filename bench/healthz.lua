-- floor: GET /healthz, the cheapest route.
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
wrk.method = "GET"
common.install("ok")

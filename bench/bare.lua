-- bare: GET / on bench/floor, the bare poem server: its constant body.
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
wrk.method = "GET"
common.install('"username":"bench_me"')

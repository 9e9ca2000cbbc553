-- wrk script: every request carries a Bearer token drawn at random from
-- the file named by TOKENS_FILE, and goes to the path named by BENCH_PATH.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
  tokens[#tokens + 1] = line
end
local path = os.getenv("BENCH_PATH") or "/"
math.randomseed(os.time())

request = function()
  local t = tokens[math.random(#tokens)]
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. t })
end

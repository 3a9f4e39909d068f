-- wrk script: POST a booking per request, cycling through users' tokens so the
-- accept path sees distinct users. Set TOKENS (a file of `user_id,token` lines) and
-- GOODS (the goods id) in the environment.
local tokens = {}
local file = assert(io.open(os.getenv("TOKENS"), "r"))
for line in file:lines() do
  local _, token = line:match("^(%d+),(.+)$")
  if token then tokens[#tokens + 1] = token end
end
file:close()
local goods = os.getenv("GOODS")
local counter = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 100000)
  threads = threads + 1
end

function init(args)
  counter = offset or 0
end

request = function()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format("POST", "/api/goods/" .. goods .. "/bookings",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
    '{"quantity":1}')
end

-- wrk script: POST one file's bytes to a verge-device route.
--   wrk -t1 -c1 -d20s --latency -s bench/post.lua http://127.0.0.1:8470/v1/infer/file-type -- FILE
local req

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, { ["Content-Type"] = "application/octet-stream" }, body)
end

function request()
  return req
end

-- Shared head of the scripts that read the clock or store whole numbers.

-- Redis's own clock in milliseconds, so every server agrees on expiry.
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A whole number as Redis should store it (never in exponent notation).
local function int(n)
  return string.format('%.0f', n)
end

-- rate_limit_day.lua: renames the daily limiter's x-ratelimit-* response headers to their -day form, so that the
-- minute limiter (which adds its own x-ratelimit-* headers after this, on the way back) does not collide with them.
-- gateway_headers.lua then turns both sets into what clients see.
--
-- Listed just before the daily local_ratelimit filter, so responses reach this right after it. A 429 from the
-- minute limiter also passes here (local replies traverse every filter); its headers are the minute limiter's,
-- marked `x-ratelimit-window: minute`, and are left alone.

function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get("x-ratelimit-window") == "minute" then return end
  for _, field in ipairs({ "limit", "remaining", "reset" }) do
    local value = headers:get("x-ratelimit-" .. field)
    if value ~= nil then
      headers:remove("x-ratelimit-" .. field)
      headers:replace("x-ratelimit-" .. field .. "-day", value)
    end
  end
end

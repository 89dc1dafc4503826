-- gateway_headers.lua: the headers the gateway adds for clients and services, besides errors (errors.lua).
--
-- Runs after jwt_authn and ext_authz, and before the RBAC filter and the two local_ratelimit filters, so that:
--   * on requests, it sees who was authenticated: a verified JWT gets `x-auth-method: jwt` and `x-user-roles`,
--     its `roles` claim comma-separated, which RBAC checks on the admin routes (ext_authz already set both for
--     API keys);
--   * on responses (filters run in reverse), it sees the limiters' X-RateLimit-* headers, including on their own
--     429s, and turns them into the seed's form:
--       X-RateLimit-Limit-Minute / -Remaining-Minute   the minute limiter's bucket (raw headers, renamed here)
--       X-RateLimit-Limit-Day / -Remaining-Day         the daily quota's bucket (renamed by rate_limit_day.lua)
--       X-RateLimit-Limit / -Remaining / -Reset        the window closer to running out (the exhausted one on a
--                                                      429); Reset is the unix time its full quota is back
--       Retry-After                                    on a 429: seconds until the exhausted bucket has a token
--     and every response to an authenticated request carries X-Auth-Method (jwt|apikey), as the original's do.
--
-- Buckets refill continuously (a limit of N per minute gains a request every 60/N s). Envoy reports
-- x-ratelimit-reset as the seconds until the next token, and 0 while tokens remain.

local METADATA_NAMESPACE = "jan.gateway"
-- Where jwt_authn puts a verified token's payload (its `payload_in_metadata`).
local JWT_METADATA_NAMESPACE = "envoy.filters.http.jwt_authn"
local JWT_PAYLOAD_KEY = "jwt_payload"
-- The limiters' default bucket: a request that matched none of their descriptors, so no limit applies.
local NO_LIMIT = "4294967295"
local WINDOW_SECONDS = { minute = 60, day = 86400 }

-- Reads and removes one window's x-ratelimit-{limit,remaining,reset}<suffix>; nil if there is none.
local function take_window(headers, suffix, name)
  local limit = headers:get("x-ratelimit-limit" .. suffix)
  local remaining = headers:get("x-ratelimit-remaining" .. suffix)
  local reset = headers:get("x-ratelimit-reset" .. suffix)
  headers:remove("x-ratelimit-limit" .. suffix)
  headers:remove("x-ratelimit-remaining" .. suffix)
  headers:remove("x-ratelimit-reset" .. suffix)
  if limit == nil or limit == NO_LIMIT or tonumber(limit) == nil then return nil end
  return { name = name, limit = tonumber(limit), remaining = tonumber(remaining) or 0, reset = tonumber(reset) or 0 }
end

local function show_window(headers, window, suffix)
  headers:replace("x-ratelimit-limit-" .. suffix, tostring(window.limit))
  headers:replace("x-ratelimit-remaining-" .. suffix, tostring(window.remaining))
end

-- The verified token's `roles` claim, comma-separated; "" if it has none (or it is not a list of strings).
local function jwt_roles(handle)
  local jwt = handle:streamInfo():dynamicMetadata():get(JWT_METADATA_NAMESPACE)
  local payload = jwt and jwt[JWT_PAYLOAD_KEY]
  local roles = payload and payload.roles
  if type(roles) ~= "table" then return "" end
  local names = {}
  for _, role in ipairs(roles) do
    if type(role) == "string" then names[#names + 1] = role end
  end
  return table.concat(names, ",")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local method = headers:get("x-auth-method")
  -- jwt_authn sets x-jwt-payload only for a token it verified (header_mutation removed any client copy).
  if method == nil and headers:get("x-jwt-payload") ~= nil then
    method = "jwt"
    headers:add("x-auth-method", method)
    headers:replace("x-user-roles", jwt_roles(handle))
  end
  if method ~= nil then
    handle:streamInfo():dynamicMetadata():set(METADATA_NAMESPACE, "auth_method", method)
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local metadata = handle:streamInfo():dynamicMetadata():get(METADATA_NAMESPACE)
  if metadata and metadata.auth_method then
    headers:replace("x-auth-method", metadata.auth_method)
  end

  local exhausted = headers:get("x-ratelimit-window")
  headers:remove("x-ratelimit-window")
  local minute = take_window(headers, "", "minute")
  local day = take_window(headers, "-day", "day")
  if minute then show_window(headers, minute, "minute") end
  if day then show_window(headers, day, "day") end

  local binding = minute
  if exhausted == "day" or (day and (minute == nil or day.remaining < minute.remaining)) then
    binding = day
  end
  if binding == nil then return end
  headers:replace("x-ratelimit-limit", tostring(binding.limit))
  headers:replace("x-ratelimit-remaining", tostring(binding.remaining))
  local refill_seconds = math.ceil((binding.limit - binding.remaining) * WINDOW_SECONDS[binding.name] / binding.limit)
  headers:replace("x-ratelimit-reset", tostring(os.time() + refill_seconds))
  if exhausted then
    headers:replace("retry-after", tostring(math.max(binding.reset, 1)))
  end
end

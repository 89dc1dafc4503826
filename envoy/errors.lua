-- errors.lua: gives transcoded responses their HTTP status and OpenAI's error shape,
--   {"error":{"type":...,"code":...,"message":...,"param":...,"request_id":...}}
--
-- Runs before grpc_json_transcoder in http_filters, so on the way back it sees the transcoded response:
--   * `x-http-status` (initial metadata set by a servicer) becomes the status of a successful call, and of a
--     failed one when it is an error status no gRPC code maps to (502);
--   * the gRPC headers the transcoder leaves behind are dropped;
--   * a non-2xx google.rpc.Status body, {"code":N,"message":"...","details":[]}, is replaced by its message
--     when that is already an OpenAI error JSON (what server/core/rpc.py sends), or else wrapped in one.
-- Native gRPC responses pass untouched, and 2xx bodies are never buffered, so SSE streams stay incremental.
-- Envoy's Lua (LuaJIT) has no JSON library: the helpers below handle exactly the JSON strings needed here.

local METADATA_NAMESPACE = "jan.errors"

local TYPE_BY_STATUS = {
  ["400"] = "invalid_request_error",
  ["401"] = "auth_error",
  ["403"] = "permission_error",
  ["404"] = "not_found_error",
  ["409"] = "invalid_request_error",
  ["413"] = "invalid_request_error",
  ["429"] = "rate_limit_error",
}

local UNESCAPED = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local ESCAPED = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
                  ["\t"] = "\\t" }

local function utf8_char(code_point)
  if code_point < 0x80 then
    return string.char(code_point)
  elseif code_point < 0x800 then
    return string.char(0xC0 + math.floor(code_point / 0x40), 0x80 + code_point % 0x40)
  elseif code_point < 0x10000 then
    return string.char(0xE0 + math.floor(code_point / 0x1000), 0x80 + math.floor(code_point / 0x40) % 0x40,
                       0x80 + code_point % 0x40)
  end
  return string.char(0xF0 + math.floor(code_point / 0x40000), 0x80 + math.floor(code_point / 0x1000) % 0x40,
                     0x80 + math.floor(code_point / 0x40) % 0x40, 0x80 + code_point % 0x40)
end

-- Decodes the JSON string whose first character (after the opening quote) is at `i`; nil if malformed.
local function decode_json_string(text, i)
  local parts = {}
  while true do
    local special = text:find('["\\]', i)
    if special == nil then return nil end
    parts[#parts + 1] = text:sub(i, special - 1)
    if text:sub(special, special) == '"' then return table.concat(parts) end
    local escape = text:sub(special + 1, special + 1)
    if escape == "u" then
      local hex = text:match("^%x%x%x%x", special + 2)
      if hex == nil then return nil end
      local code_point = tonumber(hex, 16)
      i = special + 6
      if code_point >= 0xD800 and code_point <= 0xDBFF then
        -- A high surrogate must be followed by a low one: together they are one code point above U+FFFF.
        local low = text:match("^\\u(%x%x%x%x)", i)
        low = low and tonumber(low, 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          code_point = 0x10000 + (code_point - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        else
          code_point = 0xFFFD
        end
      elseif code_point >= 0xDC00 and code_point <= 0xDFFF then
        code_point = 0xFFFD
      end
      parts[#parts + 1] = utf8_char(code_point)
    else
      local char = UNESCAPED[escape]
      if char == nil then return nil end
      parts[#parts + 1] = char
      i = special + 2
    end
  end
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(char)
    return ESCAPED[char] or string.format("\\u%04x", char:byte())
  end)
  return '"' .. escaped .. '"'
end

-- The `message` of a google.rpc.Status JSON body, or nil if the body is something else.
local function status_message(body)
  if not body:find('^%s*{%s*"code"%s*:') then return nil end
  local _, quote = body:find('"message"%s*:%s*"')
  if quote == nil then return "" end -- an empty message is omitted
  return decode_json_string(body, quote + 1)
end

function envoy_on_request(handle)
  -- Response headers do not carry x-request-id yet when this filter sees them, so remember it here.
  local request_id = handle:headers():get("x-request-id")
  if request_id then
    handle:streamInfo():dynamicMetadata():set(METADATA_NAMESPACE, "request_id", request_id)
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if content_type:find("^application/grpc") then return end -- native gRPC: grpc-status must survive

  local http_status = headers:get("x-http-status")
  if http_status then
    -- A successful call takes the servicer's status; a failed one keeps its error unless the header is the error
    -- status itself (an RPC that failed after sending a 201 must not answer 201).
    if headers:get(":status") == "200" or tonumber(http_status) >= 400 then headers:replace(":status", http_status) end
    headers:remove("x-http-status")
  end
  -- 204 No Content has no body, and so no content-type or content-length (RFC 9110), which the transcoder
  -- leaves behind for the servicer's empty HttpBody.
  if headers:get(":status") == "204" then
    headers:remove("content-type")
    headers:remove("content-length")
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")

  local status = headers:get(":status")
  if status:sub(1, 1) == "2" or not content_type:find("^application/json") then return end

  -- nil when the stream has no body (a servicer set x-http-status but wrote nothing): Lua cannot add one then.
  local body = handle:body()
  if body == nil then return end
  local message = status_message(body:getBytes(0, body:length()))
  if message == nil then return end -- already an OpenAI error (a servicer's HttpBody or a local reply)

  if message:find('^%s*{%s*"error"%s*:') then
    body:setBytes(message)
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata():get(METADATA_NAMESPACE)
  local request_id = metadata and metadata.request_id
  body:setBytes('{"error":{"type":' .. json_string(TYPE_BY_STATUS[status] or "internal_error")
    .. ',"code":null,"message":' .. json_string(message)
    .. ',"param":null,"request_id":' .. (request_id and json_string(request_id) or "null") .. "}}")
end

-- settle.lua: follows a completion that PostgreSQL has committed.
--
-- The terminal reports what was really dispensed, never more than was
-- approved.  The hold gives way to the real sale: its whole amount
-- leaves the contract's holds (the sale is now in the balance instead),
-- and every usage counter the authorization added to moves by the
-- difference between completed and held, so a fill of 40 L on a hold
-- of 60 L gives 20 L back to the day's limit at once.  A completion of
-- nothing (amount and volume both 0) also gives back the transaction it
-- counted.
--
-- Like release.lua, the hold hash is the token: the work is done only
-- while it exists and it is deleted in the same step, so a repeated
-- settle is harmless.  If the hold is already gone (expired, released
-- by authorize.lua just before the completion arrived, or Redis lost
-- it), the counters are left as they are: Redis then counts less than
-- PostgreSQL until fcctl rebuild, which compare reports.
--
-- The balance is taken regardless of the hold, but only with a version
-- newer than the one Redis holds (see balance.lua).
--
-- KEYS: {c:ID}:ctr.
-- ARGV: auth_id, amount (completed, kopecks), volume_ml (completed),
--       balance (kopecks, after the sale), version.
-- Returns 1 if a hold was settled, 0 if there was none.

local COUNTER_TTL = 34560000        -- seconds a counter lives, 400 days
local MAX_INT     = 9007199254740991  -- 2^53 - 1


local function fail(msg)
    error(redis.error_reply('ERR settle: ' .. msg))
end


local function fmt(n)
    return string.format('%d', n)
end


local function arg_int(i, name, min)
    local s = ARGV[i]
    local n = s and string.match(s, '^%-?%d+$') and #s <= 16 and tonumber(s)
    if not n or n > MAX_INT or n < min then
        fail('ARGV[' .. i .. '] ' .. name .. ': must be a whole number from '
             .. fmt(min) .. ', got "' .. tostring(s) .. '"')
    end
    return n
end


local ctr_key = KEYS[1]
local base = ctr_key and string.match(ctr_key, '^(.+):ctr$')
if base == nil then
    fail('KEYS[1] must end in ":ctr", got "' .. tostring(ctr_key) .. '"')
end

local auth_id = ARGV[1]
if auth_id == nil or auth_id == '' then
    fail('ARGV[1] auth_id: missing')
end

local amount  = arg_int(2, 'amount', 0)
local volume  = arg_int(3, 'volume_ml', 0)
local balance = arg_int(4, 'balance', -MAX_INT)
local version = arg_int(5, 'version', 0)


local function counter_add(suffix, delta)
    if delta == 0 then
        return
    end
    local key = base .. ':use:' .. suffix
    local cur = redis.call('GET', key)
    if not cur then
        if delta < 0 then
            return
        end
        cur = 0
    end
    local v = (tonumber(cur) or 0) + delta
    if v < 0 then
        v = 0
    end
    redis.call('SET', key, fmt(v), 'EX', COUNTER_TTL)
end


local function decode_usage(text)
    if not text or text == '' then
        return {}
    end
    local ok, list = pcall(cjson.decode, text)
    if not ok or type(list) ~= 'table' then
        return {}
    end
    return list
end


local settled = 0
local hold_key = base .. ':hold:' .. auth_id
local h = redis.call('HMGET', hold_key, 'amount', 'volume', 'usage')
local ctr_exists = redis.call('EXISTS', ctr_key) == 1

redis.call('ZREM', base .. ':holds', auth_id)

if h[1] then
    local held_amount = tonumber(h[1]) or 0
    local held_volume = tonumber(h[2]) or 0

    if ctr_exists and held_amount ~= 0 then
        local v = (tonumber(redis.call('HGET', ctr_key, 'holds')) or 0)
                  - held_amount
        if v < 0 then
            v = 0
        end
        redis.call('HSET', ctr_key, 'holds', fmt(v))
    end

    for _, u in ipairs(decode_usage(h[3])) do
        if type(u) == 'table' and type(u.k) == 'string' then
            if u.u == 'amount' then
                counter_add(u.k, amount - held_amount)
            elseif u.u == 'volume' then
                counter_add(u.k, volume - held_volume)
            elseif u.u == 'count' and amount == 0 and volume == 0 then
                counter_add(u.k, -1)
            end
        end
    end

    redis.call('DEL', hold_key)
    settled = 1
end

if ctr_exists then
    local ver = tonumber(redis.call('HGET', ctr_key, 'ver')) or -1
    if version > ver then
        redis.call('HSET', ctr_key, 'balance', fmt(balance),
                   'ver', fmt(version))
    end
end

return settled

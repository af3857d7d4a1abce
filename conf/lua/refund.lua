-- refund.lua: follows a refund that PostgreSQL has committed.
--
-- A refund returns part or all of a completed fill.  The fill's usage
-- counters give back what is refunded: the amount to amount counters,
-- the volume to volume counters, and to count counters the transaction
-- itself once the fill is refunded in full (count_back = 1; PostgreSQL
-- decides that).  The counters are the ones the authorization used,
-- passed in as the usage list PostgreSQL recorded, because the hold
-- that named them is long gone.  A counter of a period that has since
-- expired is not recreated, and none goes below zero.
--
-- There is no token here as there is for a hold: PostgreSQL makes the
-- refund idempotent on the terminal's transaction id and answers a
-- retry from its record without running this script again.
--
-- The balance is taken only with a version newer than the one Redis
-- holds (see balance.lua).
--
-- KEYS: {c:ID}:ctr.
-- ARGV: auth_id, usage (JSON list of {"k":..,"u":..}), amount (kopecks
--       refunded), volume_ml (refunded), count_back (0 or 1), balance
--       (kopecks, after the refund), version.
-- Returns 1 if the balance was taken, 0 if Redis already had it or a
-- newer one.

local COUNTER_TTL = 34560000        -- seconds a counter lives, 400 days
local MAX_INT     = 9007199254740991  -- 2^53 - 1


local function fail(msg)
    error(redis.error_reply('ERR refund: ' .. msg))
end


local function fmt(n)
    return string.format('%d', n)
end


local function arg_int(i, name, min, max)
    local s = ARGV[i]
    local n = s and string.match(s, '^%-?%d+$') and #s <= 16 and tonumber(s)
    if not n or n < min or n > max then
        fail('ARGV[' .. i .. '] ' .. name .. ': must be a whole number from '
             .. fmt(min) .. ' to ' .. fmt(max) .. ', got "' .. tostring(s)
             .. '"')
    end
    return n
end


local ctr_key = KEYS[1]
local base = ctr_key and string.match(ctr_key, '^(.+):ctr$')
if base == nil then
    fail('KEYS[1] must end in ":ctr", got "' .. tostring(ctr_key) .. '"')
end

local ok, usage = pcall(cjson.decode, ARGV[2] or '')
if not ok or type(usage) ~= 'table' then
    fail('ARGV[2] usage: not a JSON list: "' .. tostring(ARGV[2]) .. '"')
end

local amount     = arg_int(3, 'amount', 0, MAX_INT)
local volume     = arg_int(4, 'volume_ml', 0, MAX_INT)
local count_back = arg_int(5, 'count_back', 0, 1)
local balance    = arg_int(6, 'balance', -MAX_INT, MAX_INT)
local version    = arg_int(7, 'version', 0, MAX_INT)


-- takes back up to n from a counter, never below zero, never creating it
local function counter_sub(suffix, n)
    if n == 0 then
        return
    end
    local key = base .. ':use:' .. suffix
    local cur = tonumber(redis.call('GET', key))
    if cur == nil then
        return
    end
    local v = cur - n
    if v < 0 then
        v = 0
    end
    redis.call('SET', key, fmt(v), 'EX', COUNTER_TTL)
end


for _, u in ipairs(usage) do
    if type(u) == 'table' and type(u.k) == 'string' then
        if u.u == 'amount' then
            counter_sub(u.k, amount)
        elseif u.u == 'volume' then
            counter_sub(u.k, volume)
        elseif u.u == 'count' then
            counter_sub(u.k, count_back)
        end
    end
end

if redis.call('EXISTS', ctr_key) == 0 then
    return 0
end

local ver = tonumber(redis.call('HGET', ctr_key, 'ver')) or -1
if version <= ver then
    return 0
end

redis.call('HSET', ctr_key, 'balance', fmt(balance), 'ver', fmt(version))
return 1

-- release.lua: gives back what an authorization held, when it is
-- reversed, expired, or could not be recorded in PostgreSQL.
--
-- A hold is the hash {c:ID}:hold:<auth_id> plus its member in the
-- contract's {c:ID}:holds zset.  Releasing it takes its amount out of
-- the contract's holds and takes its quantities back out of every usage
-- counter the authorization added them to: the amount to an amount
-- counter, the volume to a volume counter, 1 to a count counter.  The
-- hash records which counters those were, so a release never needs the
-- limits, which may have changed since.
--
-- The hold hash is the token of the work: it is deleted in the same
-- step, so a second release (a retry, or the daemon and authorize.lua
-- both expiring the same hold) finds nothing and changes nothing.  A
-- counter that expired meanwhile is not recreated, and no counter or
-- holds total goes below zero.  authorize.lua does the same work for
-- expired holds; a script cannot call another, so the code is repeated
-- there and must be kept the same.
--
-- When nginx could not record the decision in PostgreSQL, it passes the
-- terminal's ids as well: the stored result of that authorization is
-- forgotten with the hold, so that the terminal's retry is decided
-- anew instead of replaying an approval that is on no record.
--
-- KEYS: {c:ID}:ctr.  ARGV: auth_id [, terminal_id, terminal_txn_id].
-- Returns 1 if a hold was released, 0 if there was none.

local COUNTER_TTL = 34560000        -- seconds a counter lives, 400 days


local function fail(msg)
    error(redis.error_reply('ERR release: ' .. msg))
end


local function fmt(n)
    return string.format('%d', n)
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


local function holds_add(delta)
    if delta == 0 or redis.call('EXISTS', ctr_key) == 0 then
        return
    end
    local v = (tonumber(redis.call('HGET', ctr_key, 'holds')) or 0) + delta
    if v < 0 then
        v = 0
    end
    redis.call('HSET', ctr_key, 'holds', fmt(v))
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


if ARGV[2] and ARGV[3] then
    redis.call('DEL', base .. ':txn:' .. ARGV[2] .. ':' .. ARGV[3])
end

local hold_key = base .. ':hold:' .. auth_id
local h = redis.call('HMGET', hold_key, 'amount', 'volume', 'usage')

redis.call('ZREM', base .. ':holds', auth_id)
if not h[1] then
    return 0
end

local amount = tonumber(h[1]) or 0
local volume = tonumber(h[2]) or 0

holds_add(-amount)
for _, u in ipairs(decode_usage(h[3])) do
    if type(u) == 'table' and type(u.k) == 'string' then
        if u.u == 'amount' then
            counter_add(u.k, -amount)
        elseif u.u == 'volume' then
            counter_add(u.k, -volume)
        elseif u.u == 'count' then
            counter_add(u.k, -1)
        end
    end
end
redis.call('DEL', hold_key)

return 1

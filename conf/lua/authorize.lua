-- authorize.lua: the authorization decision at the pump, taken inside
-- Redis in one atomic step.
--
-- A terminal asks for a volume of fuel (or an amount of money) on a card.
-- Everything the answer depends on lives under the contract's hash tag:
-- the card, the contract's balance and holds, every limit of the card,
-- its group and its contract, and the usage counters of the current
-- periods.  Because a script runs alone, reading the counters and adding
-- the new fill to them cannot interleave with another authorization of
-- the same contract: two hundred pumps asking at once are served one
-- after the other, and no limit is ever overrun by a race.
--
-- The decision, in order:
--
--   1. A result stored under the terminal's transaction id is returned
--      as it is, with "replay":true added.  A retry never takes a
--      second hold.
--   2. Holds whose expiry passed are released first, at most
--      PURGE_MAX of them per call, so Redis heals itself even when the
--      daemon is late, while one unlucky call never pays for a long
--      backlog.  A hold left over is still counted, which errs on the
--      side of declining.
--   3. Card status and expiry, contract status, the card's fuel list.
--   4. Every limit whose product scope covers the product, card limits
--      first, then the group's, then the contract's, each in order of
--      id.  Time, geography and transaction count decline outright;
--      amount and volume limits each give a remaining quantity.
--   5. The strictest bound wins: the approved quantity is the smallest
--      of the request, every remaining quantity and the money
--      available (balance + credit - holds).
--
-- Volume and money are tied by the unit price in kopecks per litre:
-- amount(v) = round half up (v * price / 1000).  The largest volume
-- whose amount stays within M kopecks is floor((1000 M + 499) / price).
-- A money bound is compared in millilitres for a volume request and a
-- volume bound in kopecks for an amount request; the binding bound is
-- the one that gave the minimum, and it names the decline or the
-- partial approval: INSUFFICIENT_FUNDS when it is the money available,
-- LIMIT_EXCEEDED with the limit's id and name otherwise.  On a tie the
-- limit is named, since it is the tighter rule the client set.
--
-- Products measured in pieces (goods and services) have no volume: an
-- amount request approves money only, and volume limits do not apply to
-- them.  The unit comes in ARGV[22] ('l' or 'pcs'); without it a product
-- of group fuel is in litres and any other in pieces.
--
-- Numbers: Lua numbers are doubles.  Every value handled is a whole
-- number below 2^53 (the request bounds below are checked again here),
-- every division is floored explicitly, and a bound is clipped before it
-- is multiplied, so that no product exceeds 2^53 either.  Integers are
-- turned into text with string.format('%d'), never tostring(), which
-- would print large values in exponent form.
--
-- An approval adds the approved amount to the contract's holds, adds the
-- approved amount, volume or 1 to the counter of every quantity limit
-- that applied (the limits of a per-transaction period have none),
-- stores the hold and the result.  A decline changes nothing but the
-- stored result, so that its retry is answered the same way.
--
-- KEYS: {c:ID}:ctr, {c:ID}:card:<card>, {c:ID}:lim:ctr,
--       {c:ID}:lim:grp:<gid> (any key of the contract when there is no
--       group: it is then empty), {c:ID}:lim:card:<card>.
-- ARGV: auth_id, terminal_id, terminal_txn_id, product_code,
--       product_group, unit_price, requested_volume_ml (0 if none),
--       requested_amount (0 if none), now (unix seconds), local date
--       YYYYMMDD, local ISO weekday 1-7, local minute of day, station id,
--       network, region, hold ttl seconds, day key, week key, month key,
--       quarter key, year key[, unit].
-- Every other key is derived from KEYS[1] by replacing its ':ctr'
-- suffix, so all of them share the contract's hash tag.
--
-- Returns the result as JSON text:
-- {"status":"approved"|"partial"|"declined","auth_id":..,
--  "approved_volume_ml":..,"approved_amount":..,"decline_code":..,
--  "limit":{"id":..,"name":..},"usage":[{"k":"5:2026-12-04","u":"volume"}]}
-- decline_code is set for a decline and, naming the binding bound, for
-- a partial approval (nginx shows the latter to the terminal as
-- "reason"); limit only when a limit was the cause.
-- A malformed argument or hot state that is missing or malformed is an
-- error reply: deciding on it could approve what must be declined.

local COUNTER_TTL = 34560000        -- seconds a counter lives, 400 days
local RESULT_TTL  = 604800          -- seconds a stored result lives, 7 days
local HOLD_GRACE  = 86400           -- seconds a hold hash outlives expiry
local PURGE_MAX   = 64              -- expired holds released per call

local MAX_VOLUME  = 10000000        -- millilitres
local MAX_PRICE   = 10000000        -- kopecks per litre or per piece
local MAX_AMOUNT  = 1000000000000   -- kopecks
local MAX_INT     = 9007199254740991  -- 2^53 - 1


local function fail(msg)
    error(redis.error_reply('ERR authorize: ' .. msg))
end


local function fmt(n)
    return string.format('%d', n)
end


-- the whole number s (a number, or its decimal digits), or nil when s
-- is not one or is beyond 2^53
local function whole(s)
    local n = s
    if type(s) == 'string' then
        if not string.match(s, '^%-?%d+$') or #s > 17 then
            return nil
        end
        n = tonumber(s)
    end
    if type(n) ~= 'number' or n ~= math.floor(n) or n > MAX_INT
       or n < -MAX_INT
    then
        return nil
    end
    return n
end


local function arg_int(i, name, min, max)
    local n = whole(ARGV[i])
    if n == nil or n < min or n > max then
        fail('ARGV[' .. i .. '] ' .. name .. ': must be a whole number from '
             .. fmt(min) .. ' to ' .. fmt(max) .. ', got "'
             .. tostring(ARGV[i]) .. '"')
    end
    return n
end


local function arg_text(i, name)
    local s = ARGV[i]
    if s == nil or s == '' then
        fail('ARGV[' .. i .. '] ' .. name .. ': missing')
    end
    return s
end


if #KEYS ~= 5 then
    fail('5 keys expected, got ' .. #KEYS)
end

local ctr_key = KEYS[1]
local base = string.match(ctr_key, '^(.+):ctr$')
if base == nil then
    fail('KEYS[1] must end in ":ctr", got "' .. ctr_key .. '"')
end
for i = 2, 5 do
    if string.sub(KEYS[i], 1, #base + 1) ~= base .. ':' then
        fail('KEYS[' .. i .. '] is not a key of ' .. base)
    end
end

local card_id = string.match(KEYS[2], ':card:(%d+)$')
if card_id == nil then
    fail('KEYS[2] must be a card key, got "' .. KEYS[2] .. '"')
end

local auth_id       = arg_text(1, 'auth_id')
local terminal_id   = arg_text(2, 'terminal_id')
local txn_id        = arg_text(3, 'terminal_txn_id')
local product_code  = arg_text(4, 'product_code')
local product_group = arg_text(5, 'product_group')
local price         = arg_int(6, 'unit_price', 1, MAX_PRICE)
local want_volume   = arg_int(7, 'requested_volume_ml', 0, MAX_VOLUME)
local want_amount   = arg_int(8, 'requested_amount', 0, MAX_AMOUNT)
local now           = arg_int(9, 'now', 0, MAX_INT)
local today         = arg_int(10, 'local date', 19000101, 99991231)
local weekday       = arg_int(11, 'weekday', 1, 7)
local minute        = arg_int(12, 'minute of day', 0, 1439)
local station       = arg_int(13, 'station id', 0, MAX_INT)
local network       = ARGV[14] or ''
local region        = ARGV[15] or ''
local hold_ttl      = arg_int(16, 'hold ttl', 1, 31536000)

local period_keys = {
    day     = arg_text(17, 'day key'),
    week    = arg_text(18, 'week key'),
    month   = arg_text(19, 'month key'),
    quarter = arg_text(20, 'quarter key'),
    year    = arg_text(21, 'year key'),
    once    = 'once'
}

local unit = ARGV[22]
if unit == nil or unit == '' then
    unit = (product_group == 'fuel') and 'l' or 'pcs'
elseif unit ~= 'l' and unit ~= 'pcs' then
    fail('ARGV[22] unit: must be "l" or "pcs", got "' .. unit .. '"')
end

if (want_volume > 0) == (want_amount > 0) then
    fail('exactly one of requested_volume_ml and requested_amount must be'
         .. ' above 0, got ' .. fmt(want_volume) .. ' and '
         .. fmt(want_amount))
end

local txn_key   = base .. ':txn:' .. terminal_id .. ':' .. txn_id
local holds_key = base .. ':holds'


-- 1. a retry gets the first answer, marked "replay" so that nginx knows
-- this call placed no hold of its own (and so must never release one)

local stored = redis.call('GET', txn_key)
if stored then
    if string.sub(stored, -1) == '}' then
        return string.sub(stored, 1, -2) .. ',"replay":true}'
    end
    return stored
end


-- 2. expired holds
--
-- The same work as release.lua: the hold's amount leaves the contract's
-- holds and its quantities leave the counters it was added to.  A
-- counter that has expired meanwhile stays absent, and none goes below
-- zero.

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


local function release_hold(id)
    local hold_key = base .. ':hold:' .. id
    local h = redis.call('HMGET', hold_key, 'amount', 'volume', 'usage')

    redis.call('ZREM', holds_key, id)
    if not h[1] then
        return
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
end


local expired = redis.call('ZRANGEBYSCORE', holds_key, '-inf', fmt(now),
                           'LIMIT', 0, PURGE_MAX)
for _, id in ipairs(expired) do
    release_hold(id)
end


-- the answer, stored for retries; usage is spliced in by hand because
-- cjson would write an empty list as {}

local function answer(res, usage)
    local usage_json = '[]'
    if #usage > 0 then
        usage_json = cjson.encode(usage)
    end
    local body = cjson.encode(res)
    body = string.sub(body, 1, -2) .. ',"usage":' .. usage_json .. '}'
    redis.call('SET', txn_key, body, 'EX', RESULT_TTL)
    return body
end


local function limit_ref(l)
    return { id = l.id, name = l.name }
end


local function decline(code, l)
    local res = {
        status = 'declined',
        auth_id = auth_id,
        approved_volume_ml = 0,
        approved_amount = 0,
        decline_code = code
    }
    if l then
        res.limit = limit_ref(l)
    end
    return answer(res, {})
end


-- 3. card and contract

local card = redis.call('HMGET', KEYS[2], 'status', 'exp', 'fuel')
if not card[1] then
    fail('no card hash ' .. KEYS[2])
end

local ctr = redis.call('HMGET', ctr_key, 'status', 'balance', 'credit',
                       'holds')
if not ctr[1] then
    fail('no contract hash ' .. ctr_key)
end

if card[1] == 'expired' then
    return decline('CARD_EXPIRED')
end
if card[1] ~= 'active' then
    return decline('CARD_BLOCKED')
end
if card[2] and card[2] ~= '' then
    local exp = whole(card[2])
    if exp == nil then
        fail('card ' .. KEYS[2] .. ' exp: not a date: "' .. card[2] .. '"')
    end
    if exp < today then
        return decline('CARD_EXPIRED')
    end
end

if ctr[1] ~= 'active' then
    return decline('CONTRACT_BLOCKED')
end

if product_group == 'fuel' and card[3] and card[3] ~= '' then
    local allowed = false
    for code in string.gmatch(card[3], '[^,]+') do
        if code == product_code then
            allowed = true
            break
        end
    end
    if not allowed then
        return decline('PRODUCT_NOT_ALLOWED')
    end
end

local function ctr_int(i, name)
    local v = ctr[i]
    if not v or v == '' then
        return 0
    end
    local n = whole(v)
    if n == nil then
        fail(ctr_key .. ' ' .. name .. ': not a whole number: "' .. v .. '"')
    end
    return n
end

local available = ctr_int(2, 'balance') + ctr_int(3, 'credit')
                  - ctr_int(4, 'holds')
if available < 0 then
    available = 0
end


-- 4. limits

local function load_limits(key, into)
    local flat = redis.call('HGETALL', key)
    local batch = {}
    for i = 1, #flat, 2 do
        local ok, l = pcall(cjson.decode, flat[i + 1])
        if not ok or type(l) ~= 'table' or whole(l.id) == nil then
            fail('limit ' .. flat[i] .. ' in ' .. key .. ' is not valid JSON'
                 .. ' with an id')
        end
        batch[#batch + 1] = l
    end
    table.sort(batch, function(a, b) return a.id < b.id end)
    for _, l in ipairs(batch) do
        into[#into + 1] = l
    end
end

local limits = {}
load_limits(KEYS[5], limits)
load_limits(KEYS[4], limits)
load_limits(KEYS[3], limits)


local function bad_limit(l, what)
    fail('limit ' .. fmt(l.id) .. ': ' .. what)
end


local function limit_int(l, field, min, max)
    local n = whole(l[field])
    if n == nil or n < min or n > max then
        bad_limit(l, field .. ' must be a whole number from ' .. fmt(min)
                  .. ' to ' .. fmt(max))
    end
    return n
end


local function covers(l)
    local ps = l.ps or 'all'
    if ps == 'all' then
        return true
    elseif ps == 'group' then
        return l.pg == product_group
    elseif ps == 'product' then
        return l.pc == product_code
    end
    bad_limit(l, 'unknown product scope "' .. tostring(ps) .. '"')
end


-- [tf, tt) in local minutes; tf > tt wraps past midnight, tf = tt is
-- an empty window
local function in_time(l)
    local wd = limit_int(l, 'wd', 0, 127)
    local tf = limit_int(l, 'tf', 0, 1440)
    local tt = limit_int(l, 'tt', 0, 1440)

    if math.floor(wd / 2 ^ (weekday - 1)) % 2 == 0 then
        return false
    end
    if tf <= tt then
        return minute >= tf and minute < tt
    end
    return minute >= tf or minute < tt
end


local function listed(list, value, as_number)
    if type(list) ~= 'table' then
        return false
    end
    for _, v in ipairs(list) do
        if as_number then
            if tonumber(v) == value then
                return true
            end
        elseif tostring(v) == value then
            return true
        end
    end
    return false
end


local function at_allowed_station(l)
    local hit = listed(l.st, station, true) or listed(l.nw, network, false)
                or listed(l.rg, region, false)
    if l.gm == 'allow' then
        return hit
    elseif l.gm == 'deny' then
        return not hit
    end
    bad_limit(l, 'unknown geo mode "' .. tostring(l.gm) .. '"')
end


-- the counter suffix of the current period, nil for a per-transaction
-- limit
local function period_suffix(l)
    if l.period == 'txn' then
        return nil
    end
    local key = period_keys[l.period or '']
    if key == nil then
        bad_limit(l, 'unknown period "' .. tostring(l.period) .. '"')
    end
    return fmt(l.id) .. ':' .. key
end


local function used(suffix)
    if suffix == nil then
        return 0
    end
    return whole(redis.call('GET', base .. ':use:' .. suffix)) or 0
end


local usage = {}
local money_bounds = {}
local volume_bounds = {}

for _, l in ipairs(limits) do
    if covers(l) then
        local kind = l.kind

        if kind == 'time' then
            if not in_time(l) then
                return decline('OUTSIDE_ALLOWED_TIME', l)
            end

        elseif kind == 'geo' then
            if not at_allowed_station(l) then
                return decline('STATION_NOT_ALLOWED', l)
            end

        elseif kind == 'count' or kind == 'amount' or kind == 'volume' then
            local value = limit_int(l, 'value', 0, MAX_INT)
            local suffix = period_suffix(l)

            if kind == 'count' then
                if used(suffix) + 1 > value then
                    return decline('TOO_MANY_TRANSACTIONS', l)
                end
                if suffix then
                    usage[#usage + 1] = { k = suffix, u = 'count' }
                end

            elseif kind == 'amount' or unit == 'l' then
                local left = value - used(suffix)
                if left < 0 then
                    left = 0
                end
                local bounds = (kind == 'amount') and money_bounds
                               or volume_bounds
                bounds[#bounds + 1] = { value = left, limit = l }
                if suffix then
                    usage[#usage + 1] = { k = suffix, u = kind }
                end
            end

        else
            bad_limit(l, 'unknown kind "' .. tostring(kind) .. '"')
        end
    end
end


-- 5. the strictest bound

-- last, so that on a tie a limit is named rather than the money
money_bounds[#money_bounds + 1] = { value = available, limit = nil }

-- amount(v) = round half up (v * price / 1000), v * price < 2^53
local function amount_of(v)
    return math.floor((v * price + 500) / 1000)
end


-- the largest volume whose amount is within m, m * 1000 < 2^53
local function volume_for(m)
    if m <= 0 then
        return 0
    end
    return math.floor((1000 * m + 499) / price)
end


local want, got, binding
local approved_volume, approved_amount

if want_volume > 0 then
    want = want_volume
    got = want
    -- every bound in millilitres; money beyond the cost of the request
    -- cannot bind, so it is clipped to that cost before it is scaled
    local cost = amount_of(want)
    for _, b in ipairs(volume_bounds) do
        if b.value < got then
            got, binding = b.value, b
        end
    end
    for _, b in ipairs(money_bounds) do
        local cap = volume_for(math.min(b.value, cost))
        if cap < got then
            got, binding = cap, b
        end
    end
    approved_volume = got
    approved_amount = amount_of(got)

else
    want = want_amount
    got = want
    -- every bound in kopecks; a volume beyond the one just above the
    -- request cannot bind, so it is clipped there before it is priced
    local beyond = volume_for(want) + 1
    for _, b in ipairs(volume_bounds) do
        local cap = amount_of(math.min(b.value, beyond))
        if cap < got then
            got, binding = cap, b
        end
    end
    for _, b in ipairs(money_bounds) do
        if b.value < got then
            got, binding = b.value, b
        end
    end
    approved_amount = got
    approved_volume = 0
    if unit == 'l' then
        approved_volume = math.floor(got * 1000 / price)
        -- rounding up the price of a low-priced volume bound could
        -- otherwise buy a millilitre or two more than the limit
        for _, b in ipairs(volume_bounds) do
            if approved_volume > b.value then
                approved_volume = b.value
            end
        end
    end
end


local function bound_code(b)
    if b.limit then
        return 'LIMIT_EXCEEDED', b.limit
    end
    return 'INSUFFICIENT_FUNDS', nil
end


if got <= 0 then
    return decline(bound_code(binding))
end

local res = {
    status = 'approved',
    auth_id = auth_id,
    approved_volume_ml = approved_volume,
    approved_amount = approved_amount
}

if got < want then
    local code, l = bound_code(binding)
    res.status = 'partial'
    res.decline_code = code
    if l then
        res.limit = limit_ref(l)
    end
end


-- 6. the hold

local exp = now + hold_ttl
local usage_json = '[]'
if #usage > 0 then
    usage_json = cjson.encode(usage)
end

holds_add(approved_amount)

for _, u in ipairs(usage) do
    if u.u == 'amount' then
        counter_add(u.k, approved_amount)
    elseif u.u == 'volume' then
        counter_add(u.k, approved_volume)
    else
        counter_add(u.k, 1)
    end
end

local hold_key = base .. ':hold:' .. auth_id
redis.call('DEL', hold_key)
redis.call('HSET', hold_key, 'card', card_id,
           'amount', fmt(approved_amount), 'volume', fmt(approved_volume),
           'exp', fmt(exp), 'usage', usage_json)
redis.call('EXPIRE', hold_key, hold_ttl + HOLD_GRACE)
redis.call('ZADD', holds_key, fmt(exp), auth_id)

return answer(res, usage)

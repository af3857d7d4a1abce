-- balance.lua: brings a contract's balance in Redis up to date after a
-- top-up or any other ledger entry.
--
-- PostgreSQL numbers the balance of each contract with a version that
-- grows with every ledger entry.  Write-throughs can arrive out of
-- order (two top-ups committed close together, a retry of an old
-- one), so the balance is taken only with a version newer than the one
-- Redis holds; an older one is dropped.  A missing contract hash is
-- left alone rather than created half empty: fcctl rebuild restores it.
--
-- KEYS: {c:ID}:ctr.  ARGV: balance (kopecks), version.
-- Returns 1 if the balance was taken, 0 if Redis already had it or a
-- newer one.

local MAX_INT = 9007199254740991    -- 2^53 - 1


local function fail(msg)
    error(redis.error_reply('ERR balance: ' .. msg))
end


local function arg_int(i, name)
    local s = ARGV[i]
    local n = s and string.match(s, '^%-?%d+$') and #s <= 16 and tonumber(s)
    if not n or n > MAX_INT or n < -MAX_INT then
        fail('ARGV[' .. i .. '] ' .. name .. ': not a whole number: "'
             .. tostring(s) .. '"')
    end
    return n
end


local ctr_key = KEYS[1]
if ctr_key == nil or not string.match(ctr_key, ':ctr$') then
    fail('KEYS[1] must end in ":ctr", got "' .. tostring(ctr_key) .. '"')
end

local balance = arg_int(1, 'balance')
local version = arg_int(2, 'version')

if redis.call('EXISTS', ctr_key) == 0 then
    return 0
end

local ver = tonumber(redis.call('HGET', ctr_key, 'ver')) or -1
if version <= ver then
    return 0
end

redis.call('HSET', ctr_key, 'balance', string.format('%d', balance),
           'ver', string.format('%d', version))
return 1

--[[
apply.lua: several plain Redis commands applied as one atomic step.

The write-through of a change made in PostgreSQL (a card blocked, the
limits of a contract rewritten) may take several commands: delete a
hash, then fill it again.  Sent one by one, an authorization could run
between them and see a card without limits.  nginx groups the commands
that share one hash tag and sends them here, so that a decision sees
either the old state or the new one, never half of each.

KEYS[1]  any key of the group; it names the hash tag (and so the slot)
ARGV[1]  a JSON array of commands, each an array of strings
Returns  the number of commands applied.
--]]

local cmds = cjson.decode(ARGV[1])

for i = 1, #cmds do
    redis.call(unpack(cmds[i]))
end

return #cmds

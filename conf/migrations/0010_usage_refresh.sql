-- The usage lists of open and recent fills follow the limits.
--
-- An authorization records which limit counters it added to, as its
-- usage list (docs/processing.md): in the Redis hold hash, read by
-- release.lua and settle.lua, and in pos_auths.usage, passed to
-- refund.lua.  When a limit is created, changed or deleted, or a card
-- moves to another group, fc_hot_limit_cmds() sets every current
-- counter to what PostgreSQL derives from the authorizations, open
-- holds included.  The lists of those authorizations still named the
-- counters of before, so a later release, completion or refund moved
-- the wrong counters and Redis drifted from PostgreSQL for good: a
-- limit created over an open hold kept the hold after its reversal.
--
-- So the rewrite of a contract's limits also rewrites the usage lists
-- of its authorizations to the counters that PostgreSQL counts them in,
-- in pos_auths and in the hold hashes, in the same atomic step in Redis
-- as the counters themselves (fc_hot_limit_cmds, fc_hot_usage_cmds).
-- fc_hot_state() reads pos_auths.usage, so a rebuild writes the same
-- lists.
--
-- Functions replaced under their old signatures: fc_hot_row_cmds (the
-- counter's time to live is a string, so that nginx can batch the
-- counters with the rest of the rewrite) and fc_hot_limit_cmds (now
-- VOLATILE: it writes the refreshed lists).


-- ---------------------------------------------------------------------
-- The usage list of an authorization
-- ---------------------------------------------------------------------

-- Returns the usage lists that authorize.lua would give the holds of a
-- contract and its completions authorized since `since`, were they
-- decided under the limits as they are now, with the lists they have.
-- A list has one entry {"k": "<limit id>:<period key>", "u": "amount"|
-- "volume"|"count"} for every quantity limit of the contract with a
-- counter (not per transaction) whose scope covers the card (the card,
-- the card's current group, the contract) and whose product scope the
-- product; the key is of the period that contains authorized_at in the
-- organization's zone.  A volume limit counts only products sold by the
-- litre, as in authorize.lua, and the order is the script's: the card's
-- limits, the group's, the contract's, each by id.  These are the
-- counters fc_limit_used() counts the authorization in.
CREATE FUNCTION fc_auth_usage_lists(contract_id bigint, since timestamptz)
    RETURNS TABLE (auth_id uuid, state text, old_usage jsonb, usage jsonb)
LANGUAGE sql STABLE AS $$
    SELECT a.auth_id, a.state, a.usage,
           coalesce(jsonb_agg(jsonb_build_object(
                                  'k', l.id || ':' || pb.period_key,
                                  'u', l.kind)
                              ORDER BY CASE l.scope WHEN 'card' THEN 0
                                                    WHEN 'group' THEN 1
                                                    ELSE 2 END,
                                       l.id)
                        FILTER (WHERE l.id IS NOT NULL),
                    '[]')
      FROM pos_auths a
     CROSS JOIN (SELECT fc_contract_tz(fc_auth_usage_lists.contract_id)
                        AS tz) z
      JOIN cards c ON c.id = a.card_id
      LEFT JOIN products p ON p.code = a.product_code
      LEFT JOIN limits l
             ON l.contract_id = a.contract_id
            AND l.kind IN ('amount', 'volume', 'count')
            AND l.period <> 'txn'
            AND CASE l.scope
                WHEN 'card' THEN l.card_id = a.card_id
                WHEN 'group' THEN l.group_id = c.group_id
                ELSE true
                END
            AND CASE l.product_scope
                WHEN 'group' THEN l.product_group = p.grp
                WHEN 'product' THEN l.product_code = a.product_code
                ELSE true
                END
            AND (l.kind <> 'volume' OR p.unit = 'l')
      LEFT JOIN LATERAL fc_period_bounds(z.tz, a.authorized_at, l.period) pb
             ON true
     WHERE a.contract_id = fc_auth_usage_lists.contract_id
       AND (a.state = 'held'
            OR (a.state = 'completed' AND a.authorized_at >= since))
     GROUP BY a.auth_id
$$;


-- Rewrites the usage lists of a contract's authorizations that a
-- current counter counts, or that may still move one, to what
-- fc_auth_usage_lists() says, and returns the commands that write the
-- lists of its holds into their hashes in Redis.
--
-- Those are every hold, and the completions since the earliest start of
-- a current period of the contract's limits (none without a quantity
-- limit, all of them with a limit 'once'): a refund of an older fill
-- can only move a counter of a period that has ended, which no decision
-- reads.
--
-- A row that another transaction has locked right now (a completion,
-- reversal or refund of it) is left as it is rather than waited for:
-- the card update that calls this holds the card's row, which that
-- operation needs next, and waiting would deadlock.  The row keeps its
-- old list in pos_auths until the next rewrite; its hash in Redis gets
-- the new one like every other hold.
--
-- A hold may be released in Redis before these commands run.  The HSET
-- then makes a hash with a lone usage field, and the EXPIRE 0 NX after
-- it deletes that hash in the same step: a real hold hash always has a
-- time to live (authorize.lua and fcctl rebuild give it one), a hash
-- just made by HSET has none, and NX (Redis 7) acts only on a key
-- without one.
CREATE FUNCTION fc_hot_usage_cmds(contract_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p_contract  bigint := contract_id;
    since       timestamptz;
    ids         uuid[];
    lists       jsonb[];
    changed     uuid[];
    cmds        jsonb;
BEGIN
    SELECT coalesce(min(pb.starts), 'infinity')
      INTO since
      FROM limits l
     CROSS JOIN LATERAL fc_period_bounds(fc_contract_tz(p_contract),
                                         fc_clock(), l.period) pb
     WHERE l.contract_id = p_contract
       AND l.kind IN ('amount', 'volume', 'count')
       AND l.period <> 'txn';

    SELECT coalesce(array_agg(f.auth_id), '{}'),
           coalesce(array_agg(f.usage), '{}'),
           coalesce(array_agg(f.auth_id)
                        FILTER (WHERE f.usage IS DISTINCT FROM f.old_usage),
                    '{}')
      INTO ids, lists, changed
      FROM fc_auth_usage_lists(p_contract, since) f
     WHERE f.state = 'held'
        OR f.usage IS DISTINCT FROM f.old_usage;

    UPDATE pos_auths a
       SET usage = f.usage
      FROM unnest(ids, lists) AS f (auth_id, usage)
     WHERE a.auth_id = f.auth_id
       AND a.auth_id IN (SELECT l.auth_id
                           FROM pos_auths l
                          WHERE l.auth_id = ANY (changed)
                            FOR UPDATE SKIP LOCKED);

    SELECT coalesce(jsonb_agg(c.cmd ORDER BY f.auth_id, c.n), '[]')
      INTO cmds
      FROM unnest(ids, lists) AS f (auth_id, usage)
      JOIN pos_auths a ON a.auth_id = f.auth_id
     CROSS JOIN LATERAL (VALUES
         (1, jsonb_build_array('HSET',
                               format('{c:%s}:hold:%s', a.contract_id,
                                      a.auth_id),
                               'usage', fc_json_compact(f.usage))),
         (2, jsonb_build_array('EXPIRE',
                               format('{c:%s}:hold:%s', a.contract_id,
                                      a.auth_id),
                               '0', 'NX'))
     ) AS c (n, cmd)
     WHERE a.state = 'held';

    RETURN cmds;
END
$$;


-- ---------------------------------------------------------------------
-- The rewrite of a contract's limits
-- ---------------------------------------------------------------------

-- Returns the commands that make a key hold what a row describes: a
-- hash and a zset are deleted and written whole (del false: written
-- over, for hashes whose fields never change), a string is SET, a limit
-- counter with its time to live.  The time to live is a string like
-- every other argument: nginx sends a run of plain commands of one
-- contract through apply.lua in one atomic step only when they are all
-- strings, and a counter must change together with the limits and the
-- usage lists that name it.
CREATE OR REPLACE FUNCTION fc_hot_row_cmds(key text, kind text, value jsonb,
                                           del boolean DEFAULT true)
    RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cmds  jsonb := '[]';
    cmd   jsonb;
BEGIN
    CASE kind
    WHEN 'string' THEN
        cmd := jsonb_build_array('SET', key, value);
        IF key ~ '^\{c:[0-9]+\}:use:' THEN
            cmd := cmd || jsonb_build_array('EX', fc_hot_use_ttl()::text);
        END IF;
        cmds := jsonb_build_array(cmd);
    WHEN 'hash' THEN
        IF del THEN
            cmds := jsonb_build_array(jsonb_build_array('DEL', key));
        END IF;
        SELECT jsonb_build_array('HSET', key)
               || jsonb_agg(x.v ORDER BY e.n, x.i)
          INTO cmd
          FROM jsonb_each(value) WITH ORDINALITY AS e(f, v, n),
               LATERAL (VALUES (1, to_jsonb(e.f)), (2, e.v)) AS x(i, v);
        IF cmd IS NOT NULL THEN
            cmds := cmds || jsonb_build_array(cmd);
        END IF;
    WHEN 'zset' THEN
        cmds := jsonb_build_array(jsonb_build_array('DEL', key));
        SELECT jsonb_build_array('ZADD', key)
               || jsonb_agg(x.v ORDER BY e.n, x.i)
          INTO cmd
          FROM jsonb_each(value) WITH ORDINALITY AS e(m, s, n),
               LATERAL (VALUES (1, e.s), (2, to_jsonb(e.m))) AS x(i, v);
        IF cmd IS NOT NULL THEN
            cmds := cmds || jsonb_build_array(cmd);
        END IF;
    END CASE;

    RETURN cmds;
END
$$;


-- Returns the commands that rewrite every lim hash of a contract, set
-- the counter of the current period of each quantity limit to what
-- PostgreSQL says was used, and write the usage lists of its holds;
-- the lists in pos_auths are rewritten too (fc_hot_usage_cmds), so that
-- every later release, completion and refund moves the counters that
-- were set here.  A hash whose scope no longer has a limit (its last
-- limit deleted or moved) must go too, so one DEL first names the lim
-- keys of the contract, every group and every card that have no limit
-- now; each remaining hash is deleted and written just before it is
-- needed again.  Every command has the contract's hash tag and only
-- strings, so nginx applies them all in one step.
--
-- Two rewrites of one contract take turns on the contract's row: the
-- second then reads what the first committed (each statement sees the
-- latest commits) and its commands, sent after the first's, say the
-- last word in Redis.
CREATE OR REPLACE FUNCTION fc_hot_limit_cmds(contract_id bigint)
    RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p_contract  bigint := contract_id;
    cmds        jsonb;
    stale       jsonb;
BEGIN
    PERFORM 1 FROM contracts k WHERE k.id = p_contract FOR NO KEY UPDATE;

    SELECT jsonb_agg(k.key ORDER BY k.n, k.key)
      INTO stale
      FROM (SELECT 1 AS n, format('{c:%s}:lim:ctr', p_contract) AS key
            UNION ALL
            SELECT 2, format('{c:%s}:lim:grp:%s', p_contract, g.id)
              FROM card_groups g
             WHERE g.contract_id = p_contract
            UNION ALL
            SELECT 3, format('{c:%s}:lim:card:%s', p_contract, c.id)
              FROM cards c
             WHERE c.contract_id = p_contract) k
     WHERE NOT EXISTS (SELECT 1
                         FROM limits l
                        WHERE l.contract_id = p_contract
                          AND fc_hot_limit_key(l) = k.key);

    SELECT coalesce(jsonb_agg(c.cmd ORDER BY r.n, c.n), '[]')
      INTO cmds
      FROM fc_hot_limit_rows(p_contract, fc_clock(), true)
           WITH ORDINALITY AS r(key, kind, value, n),
           jsonb_array_elements(fc_hot_row_cmds(r.key, r.kind, r.value))
           WITH ORDINALITY AS c(cmd, n);

    IF stale IS NOT NULL THEN
        cmds := jsonb_build_array(jsonb_build_array('DEL') || stale) || cmds;
    END IF;

    RETURN cmds || fc_hot_usage_cmds(p_contract);
END
$$;

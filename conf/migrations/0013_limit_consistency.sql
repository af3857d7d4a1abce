-- Limits: PostgreSQL counts what the pump counts, and moving limits
-- between contracts cannot deadlock.
--
-- A volume limit binds products sold by the litre only: authorize.lua
-- leaves it out for goods and services sold by the piece, and so does
-- fc_auth_usage_lists(), but fc_limit_used() counted the volume of every
-- product in the limit's scope.  A piece-goods fill with a volume on it
-- then raised the used volume in PostgreSQL and not in Redis, and the
-- two disagreed until the next rewrite of the contract's limits.
--
-- A limit moved to another contract rewrites the hot state of both, and
-- each rewrite locks its contract's row (fc_hot_limit_cmds).  Two such
-- moves in opposite directions took the two rows in opposite orders and
-- could each wait for the other.  Both rows are now locked first, in
-- order of id; no other route locks two contracts.
--
-- Functions replaced under their old signatures: fc_limit_used,
-- fc_route_limit_update.


-- Returns what a quantity limit has used in [starts, ends), derived from
-- the authorizations: the definition the Redis counters must match.
--
-- An authorization counts when it belongs to the limit's contract, was
-- authorized in the period, its card is in the limit's scope (the card,
-- the cards now in the group, every card of the contract) and its
-- product in the limit's product scope; for a volume limit the product
-- must also be sold by the litre.  A hold counts what it approved
-- (amount, volume, 1).  A completion counts what was dispensed less
-- what was refunded, and 1 unless nothing was dispensed (amount and
-- volume 0) or the whole amount was refunded.  Reversed, expired and
-- declined authorizations count nothing.  A per-transaction limit, and
-- a limit that is no quantity, has used 0.
CREATE OR REPLACE FUNCTION fc_limit_used(l limits, starts timestamptz,
                                         ends timestamptz) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(
               CASE l.kind
               WHEN 'amount' THEN
                   CASE a.state
                   WHEN 'held' THEN a.approved_amount
                   ELSE a.completed_amount - a.refunded_amount
                   END
               WHEN 'volume' THEN
                   CASE a.state
                   WHEN 'held' THEN a.approved_volume_ml
                   ELSE a.completed_volume_ml - a.refunded_volume_ml
                   END
               ELSE
                   CASE
                   WHEN a.state = 'held' THEN 1
                   WHEN a.completed_amount = 0
                        AND a.completed_volume_ml = 0 THEN 0
                   WHEN a.completed_amount > 0
                        AND a.refunded_amount >= a.completed_amount THEN 0
                   ELSE 1
                   END
               END), 0)::bigint
      FROM pos_auths a
      LEFT JOIN products p ON p.code = a.product_code
     WHERE l.kind IN ('amount', 'volume', 'count')
       AND l.period IS DISTINCT FROM 'txn'
       AND a.contract_id = l.contract_id
       AND a.state IN ('held', 'completed')
       AND a.authorized_at >= starts
       AND a.authorized_at < ends
       AND CASE l.scope
           WHEN 'card' THEN a.card_id = l.card_id
           WHEN 'group' THEN a.card_id IN (SELECT id
                                             FROM cards
                                            WHERE group_id = l.group_id)
           ELSE a.card_id IS NOT NULL
           END
       AND CASE l.product_scope
           WHEN 'group' THEN p.grp = l.product_group
           WHEN 'product' THEN a.product_code = l.product_code
           ELSE true
           END
       AND (l.kind <> 'volume' OR p.unit = 'l')
$$;


-- PUT /api/v1/limits/{id}: replaces the limit with the one in the body
-- (every field, as on create); the updated limit.  A limit moved to
-- another contract rewrites the hot state of both contracts, whose rows
-- are locked first and in order of id, so that two moves in opposite
-- directions take turns instead of deadlocking.
CREATE OR REPLACE FUNCTION fc_route_limit_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u     users := fc_session_user(req);
    old   limits;
    l     limits;
    cmds  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager');
    old := fc_cab_limit_of(u, req);
    l := fc_cab_limit_parse(u, fc_cab_body(req));

    -- the same lock fc_hot_limit_cmds takes, taken here for both
    -- contracts at once; its own later lock of each is then a no-op
    PERFORM 1
       FROM contracts k
      WHERE k.id IN (old.contract_id, l.contract_id)
      ORDER BY k.id
        FOR NO KEY UPDATE;

    UPDATE limits
       SET contract_id = l.contract_id, scope = l.scope,
           group_id = l.group_id, card_id = l.card_id,
           product_scope = l.product_scope,
           product_group = l.product_group,
           product_code = l.product_code, kind = l.kind,
           period = l.period, value = l.value, weekdays = l.weekdays,
           time_from = l.time_from, time_to = l.time_to,
           geo_mode = l.geo_mode, station_ids = l.station_ids,
           networks = l.networks, regions = l.regions, name = l.name
     WHERE id = old.id
    RETURNING * INTO l;

    PERFORM fc_audit(u, 'limit_update', 'limit', l.id::text, req,
                     jsonb_build_object('before', to_jsonb(old),
                                        'after', to_jsonb(l)));

    cmds := fc_hot_limit_cmds(l.contract_id);
    IF old.contract_id <> l.contract_id THEN
        cmds := fc_hot_limit_cmds(old.contract_id) || cmds;
    END IF;

    RETURN fc_cab_with_redis(fc_ok(200, fc_limit_json(l, fc_now(req))),
                             cmds);
END
$$;

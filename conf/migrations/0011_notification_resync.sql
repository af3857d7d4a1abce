-- A bank notification always brings Redis up to date.
--
-- The first delivery of a CONFIRMED notification commits the credit and
-- returns balance.lua for Redis.  If Redis fails at that moment, nginx
-- answers 503 and the bank sends the notification again; that repeat is
-- a duplicate to the state machine, which changes nothing and so asked
-- for nothing in Redis: the hot balance stayed old until the next
-- change.  Every answered notification of a known order now carries the
-- contract's committed balance and status.  balance.lua takes a balance
-- only with a newer version, so repeating it is harmless.

ALTER FUNCTION fc_route_bank_notification(jsonb)
    RENAME TO fc_topup_notification_apply;


CREATE FUNCTION fc_route_bank_notification(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    res   jsonb;
    cid   bigint;
    b     contract_balances;
    c     contracts;
    cmds  jsonb;
BEGIN
    res := fc_topup_notification_apply(req);

    IF (res ->> 'status') IS DISTINCT FROM '200'
       OR jsonb_typeof(req -> 'body') IS DISTINCT FROM 'object'
    THEN
        RETURN res;
    END IF;

    SELECT p.contract_id INTO cid
      FROM payments p
     WHERE p.order_id = req -> 'body' ->> 'OrderId';

    IF cid IS NULL THEN
        RETURN res;
    END IF;

    SELECT * INTO b FROM contract_balances WHERE contract_id = cid;
    SELECT * INTO c FROM contracts WHERE id = cid;

    cmds := coalesce(res -> 'redis', '[]'::jsonb);

    IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cmds) AS e
                    WHERE e ->> 0 = 'SCRIPT' AND e ->> 1 = 'balance')
       AND b.contract_id IS NOT NULL
    THEN
        cmds := cmds || jsonb_build_array(jsonb_build_array(
                    'SCRIPT', 'balance', 1, format('{c:%s}:ctr', cid),
                    b.balance, b.version));
    END IF;

    IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cmds) AS e
                    WHERE e ->> 0 = 'HSET' AND e ->> 2 = 'status')
    THEN
        cmds := cmds || jsonb_build_array(jsonb_build_array(
                    'HSET', format('{c:%s}:ctr', cid), 'status', c.status));
    END IF;

    RETURN res || jsonb_build_object('redis', cmds);
END
$$;

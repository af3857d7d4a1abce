-- Corrections to the SQL API of 0003 and 0004, found by attacking a
-- running stack.  Those migrations are applied in running databases, so
-- every change here replaces a whole function under its old signature
-- (or adds a new one); the newest definition of a function is the one
-- that counts.
--
-- - Hostile input: arguments beyond bigint, dates in year 0 and values
--   nested a thousand deep answered 500; they are now 422 naming the
--   field (fc_arg_int, fc_arg_date, fc_arg_quote).
-- - A completion or reversal after the hold expired is refused with
--   409 "expired": Redis has dropped the hold by then, so the fill
--   would be debited without ever counting towards a limit
--   (fc_pos_expired, fc_route_pos_complete, fc_route_pos_reverse).
-- - A completion must charge for what it dispensed: litres for no money
--   are refused, and money without litres only for goods sold by the
--   piece (fc_route_pos_complete).
-- - Moving a card to another group rewrites the contract's limit
--   counters in Redis, which count the cards by their current group
--   (fc_route_card_update).
-- - A time window may not start at 24:00 (fc_cab_limit_parse).
-- - Station coordinates are answered with 6 decimals (fc_coord_json,
--   fc_route_mobile_stations).


-- ---------------------------------------------------------------------
-- Arguments
-- ---------------------------------------------------------------------

-- Returns how a bad value is quoted in a message: a string as it is, any
-- other JSON as its text, both in double quotes and cut to 80
-- characters ("..." marks the cut); null as null.  The text comes from
-- jsonb's own output, never from a walk over the value: a value nested
-- a thousand deep would exhaust the stack of a recursive function.
CREATE OR REPLACE FUNCTION fc_arg_quote(v jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    max_chars  CONSTANT int := 80;
    t          text;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN 'null';
    END IF;

    IF jsonb_typeof(v) = 'string' THEN
        t := v #>> '{}';
    ELSE
        t := v::text;
    END IF;

    IF length(t) > max_chars THEN
        t := left(t, max_chars) || '...';
    END IF;

    RETURN '"' || t || '"';
END
$$;


-- Returns the whole number in obj->field within [min, max] (max NULL:
-- up to the largest bigint), or NULL when absent and not required.  A
-- JSON number whose text has '.', 'e' or 'E' is rejected as fractional;
-- a string of digits is accepted, because query parameters arrive as
-- strings.  Use fc_arg_number() where only a JSON number will do.
CREATE OR REPLACE FUNCTION fc_arg_int(obj jsonb, field text, min bigint,
                                      max bigint,
                                      required boolean DEFAULT true)
    RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bigint_max  CONSTANT numeric := 9223372036854775807;
    v           jsonb := obj -> field;
    t           text;
    n           numeric;
    bounds      text;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        v := NULL;
    END IF;

    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF NOT required THEN
            RETURN NULL;
        END IF;
    ELSIF jsonb_typeof(v) = 'number' THEN
        t := v::text;
    ELSIF jsonb_typeof(v) = 'string' THEN
        t := v #>> '{}';
    END IF;

    -- compared as numeric first: 20 digits may not fit in a bigint
    IF t ~ '^-?[0-9]{1,20}$' THEN
        n := t::numeric;
        IF n >= min AND n <= coalesce(max, bigint_max) THEN
            RETURN n::bigint;
        END IF;
    END IF;

    bounds := CASE
              WHEN max IS NOT NULL THEN format('from %s to %s', min, max)
              WHEN n > bigint_max THEN format('from %s to %s', min,
                                              bigint_max)
              ELSE '>= ' || min
              END;

    PERFORM fc_raise(422, 'validation_failed',
                     format('%s: must be a whole number %s, got %s', field,
                            bounds, fc_arg_quote(v)));
    RETURN NULL;
END
$$;


-- Returns the date YYYY-MM-DD in obj->field, or NULL when absent and
-- not required.  Years run from 1900 to 2999: nothing in fuel cards
-- happens outside, and make_date() refuses year 0 with an error of its
-- own, so the parts are checked one after the other before it runs.
CREATE OR REPLACE FUNCTION fc_arg_date(obj jsonb, field text,
                                       required boolean DEFAULT true)
    RETURNS date
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v      jsonb := obj -> field;
    t      text;
    year_   int;
    month_  int;
    day_    int;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        v := NULL;
    END IF;

    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF NOT required THEN
            RETURN NULL;
        END IF;
    ELSIF jsonb_typeof(v) = 'string' THEN
        t := v #>> '{}';
    END IF;

    IF t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        year_ := substr(t, 1, 4)::int;
        month_ := substr(t, 6, 2)::int;
        day_ := substr(t, 9, 2)::int;

        IF year_ BETWEEN 1900 AND 2999 AND month_ BETWEEN 1 AND 12 THEN
            IF day_ BETWEEN 1 AND extract(day FROM make_date(year_, month_, 1)
                                                   + interval '1 month'
                                                   - interval '1 day')
            THEN
                RETURN make_date(year_, month_, day_);
            END IF;
        END IF;
    END IF;

    PERFORM fc_raise(422, 'validation_failed',
                     format('%s: must be a date YYYY-MM-DD from 1900-01-01 '
                            'to 2999-12-31, got %s', field,
                            fc_arg_quote(v)));
    RETURN NULL;
END
$$;


-- ---------------------------------------------------------------------
-- The terminals: expired holds, completions and reversals
-- ---------------------------------------------------------------------

-- Returns the 409 "expired" answer for an authorization whose hold ran
-- out at or before at, or NULL while the hold is in force (and for
-- completed, reversed and declined ones).
--
-- Redis lets go of an expired hold without asking PostgreSQL:
-- authorize.lua purges the contract's expired holds on its next
-- decision, and the daemon releases what fc_release_expired_holds()
-- marks.  Whatever the hold counted in the limit counters is gone from
-- them, so a completion settled after that would debit a fill that no
-- limit ever saw.  A row still 'held' is marked 'expired' here, which
-- also hides it from the daemon; the answer therefore carries the
-- release itself (release.lua changes nothing when the hold is gone
-- already).  The mark is a write that must stay: the answer is
-- returned, not raised.
CREATE FUNCTION fc_pos_expired(a pos_auths, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    marking  boolean := coalesce(a.state = 'held' AND a.expires_at <= at,
                                 false);
    answer   jsonb;
BEGIN
    IF NOT marking AND a.state IS DISTINCT FROM 'expired' THEN
        RETURN NULL;
    END IF;

    answer := fc_error(409, 'expired',
                       format('authorization %s expired at %s and its hold '
                              'was released', a.auth_id,
                              to_char(a.expires_at AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS"Z"')));

    IF marking THEN
        UPDATE pos_auths
           SET state = 'expired',
               settled_at = at
         WHERE pos_auths.auth_id = a.auth_id;

        answer := answer || jsonb_build_object('redis', jsonb_build_array(
                      jsonb_build_array('SCRIPT', 'release', 1,
                                        format('{c:%s}:ctr', a.contract_id),
                                        a.auth_id)));
    END IF;

    RETURN answer;
END
$$;


-- POST /pos/v1/complete: debits the contract with what was dispensed
-- (no more than approved) and releases the rest of the hold.  Returns
-- 200 {"status":"completed", ...} with the settle script for Redis;
-- 409 "expired" once the hold has run out (fc_pos_expired).  What is
-- dispensed must be paid for: volume without an amount is refused, and
-- an amount without volume only for a product sold by the piece.
CREATE OR REPLACE FUNCTION fc_route_pos_complete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at         timestamptz := fc_now(req);
    body       jsonb := req -> 'body';
    term       terminals;
    txn_id     text;
    auth_id    uuid;
    volume_ml  bigint;
    amount     bigint;
    unit_      text;
    a          pos_auths;
    b          contract_balances;
    answer     jsonb;
BEGIN
    term := fc_pos_terminal(req);
    txn_id := fc_pos_txn_id(body);
    auth_id := fc_pos_auth_id(body);
    volume_ml := fc_arg_number(body, 'volume_ml', 0, 10000000);
    amount := fc_arg_number(body, 'amount', 0, 1000000000000);

    a := fc_pos_lock_auth(term, auth_id);
    IF a.auth_id IS NULL THEN
        RETURN fc_error(404, 'not_found',
                        format('no authorization %s at this station',
                               auth_id));
    END IF;

    answer := fc_pos_replay(term, txn_id, 'complete', auth_id);
    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    answer := fc_pos_expired(a, at);
    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    IF a.state <> 'held' THEN
        RETURN fc_error(409, 'conflict',
                        format('authorization %s %s', auth_id,
                               fc_pos_state_text(a)));
    END IF;

    IF volume_ml > a.approved_volume_ml THEN
        RETURN fc_error(422, 'exceeds_authorized',
                        format('volume_ml: %s is more than the %s authorized',
                               volume_ml, a.approved_volume_ml));
    END IF;

    IF amount > a.approved_amount THEN
        RETURN fc_error(422, 'exceeds_authorized',
                        format('amount: %s is more than the %s authorized',
                               amount, a.approved_amount));
    END IF;

    IF volume_ml > 0 AND amount = 0 THEN
        RETURN fc_error(422, 'validation_failed',
                        'amount: must be at least 1 when volume_ml is '
                        'above 0');
    END IF;

    SELECT p.unit INTO unit_ FROM products p WHERE p.code = a.product_code;

    IF amount > 0 AND volume_ml = 0 AND unit_ IS DISTINCT FROM 'pcs' THEN
        RETURN fc_error(422, 'validation_failed',
                        format('volume_ml: must be at least 1 when amount '
                               'is above 0 for %s, sold by the litre',
                               a.product_code));
    END IF;

    UPDATE pos_auths
       SET state = 'completed',
           completed_volume_ml = volume_ml,
           completed_amount = amount,
           settled_at = at
     WHERE pos_auths.auth_id = a.auth_id;

    IF amount > 0 THEN
        INSERT INTO ledger (contract_id, amount, kind, ref, description,
                            created_at)
        VALUES (a.contract_id, -amount, 'purchase', a.auth_id::text,
                format('%s at station %s', a.product_code, a.station_id),
                at);
    END IF;

    IF amount > 0 OR volume_ml > 0 THEN
        INSERT INTO transactions (contract_id, card_id, auth_id, kind,
                                  station_id, product_code, volume_ml,
                                  unit_price, amount, created_at)
        VALUES (a.contract_id, a.card_id, a.auth_id, 'sale', a.station_id,
                a.product_code, volume_ml, a.unit_price, amount, at);
    END IF;

    answer := jsonb_build_object('status', 'completed',
                                 'auth_id', a.auth_id,
                                 'volume_ml', volume_ml,
                                 'amount', amount,
                                 'released_amount',
                                 a.approved_amount - amount);

    PERFORM fc_pos_keep(term, txn_id, a, 'complete', volume_ml, amount,
                        answer, at);

    SELECT * INTO b FROM contract_balances WHERE contract_id = a.contract_id;

    RETURN fc_ok(200, answer)
           || jsonb_build_object('redis', jsonb_build_array(
                  jsonb_build_array('SCRIPT', 'settle', 1,
                                    format('{c:%s}:ctr', a.contract_id),
                                    a.auth_id, amount, volume_ml,
                                    coalesce(b.balance, 0),
                                    coalesce(b.version, 0))));
END
$$;


-- POST /pos/v1/reverse: cancels a held authorization and releases its
-- hold.  Returns 200 {"status":"reversed", ...} with the release script;
-- 409 "expired" once the hold has run out: it was released already and
-- nothing is left to reverse (fc_pos_expired).
CREATE OR REPLACE FUNCTION fc_route_pos_reverse(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at       timestamptz := fc_now(req);
    body     jsonb := req -> 'body';
    term     terminals;
    txn_id   text;
    auth_id  uuid;
    a        pos_auths;
    answer   jsonb;
BEGIN
    term := fc_pos_terminal(req);
    txn_id := fc_pos_txn_id(body);
    auth_id := fc_pos_auth_id(body);

    a := fc_pos_lock_auth(term, auth_id);
    IF a.auth_id IS NULL THEN
        RETURN fc_error(404, 'not_found',
                        format('no authorization %s at this station',
                               auth_id));
    END IF;

    answer := fc_pos_replay(term, txn_id, 'reverse', auth_id);
    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    answer := fc_pos_expired(a, at);
    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    IF a.state <> 'held' THEN
        RETURN fc_error(409, 'conflict',
                        format('authorization %s %s', auth_id,
                               fc_pos_state_text(a)));
    END IF;

    UPDATE pos_auths
       SET state = 'reversed',
           settled_at = at
     WHERE pos_auths.auth_id = a.auth_id;

    answer := jsonb_build_object('status', 'reversed',
                                 'auth_id', a.auth_id,
                                 'released_amount', a.approved_amount);

    PERFORM fc_pos_keep(term, txn_id, a, 'reverse', 0, 0, answer, at);

    RETURN fc_ok(200, answer)
           || jsonb_build_object('redis', jsonb_build_array(
                  jsonb_build_array('SCRIPT', 'release', 1,
                                    format('{c:%s}:ctr', a.contract_id),
                                    a.auth_id)));
END
$$;


-- ---------------------------------------------------------------------
-- Cards and limits
-- ---------------------------------------------------------------------

-- PATCH /api/v1/cards/{id} with any of group_id, driver_name,
-- driver_user_id, vehicle_plate, tank_capacity_ml, allowed_fuel (null
-- clears a field): the updated card.  The group must be of the card's
-- contract, the driver a driver of the organization, the fuels fuel
-- products.  A card that changes group also changes which cards the
-- group limits count (fc_limit_used), so the contract's limit counters
-- in Redis are rewritten with it.
CREATE OR REPLACE FUNCTION fc_route_card_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u        users := fc_session_user(req);
    body     jsonb;
    c        cards;
    old      cards;
    arr      jsonb;
    i        int;
    n        bigint;
    t        text;
    changed  jsonb;
    cmds     jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager');
    c := fc_card_of(u, fc_path_id(req, 0));
    body := fc_cab_body(req);
    PERFORM fc_cab_known_fields(body, ARRAY[
        'group_id', 'driver_name', 'driver_user_id', 'vehicle_plate',
        'tank_capacity_ml', 'allowed_fuel']);

    SELECT * INTO c FROM cards WHERE id = c.id FOR UPDATE;
    old := c;

    IF body ? 'group_id' THEN
        c.group_id := NULL;
        IF fc_cab_given(body, 'group_id') THEN
            n := fc_arg_number(body, 'group_id', 1, NULL);
            SELECT cg.id INTO c.group_id
              FROM card_groups cg
             WHERE cg.id = n AND cg.contract_id = c.contract_id;
            IF c.group_id IS NULL THEN
                PERFORM fc_cab_invalid(format(
                    'group_id: not a group of the card''s contract: %s',
                    fc_cab_quote(body -> 'group_id')));
            END IF;
        END IF;
    END IF;

    IF body ? 'driver_user_id' THEN
        c.driver_user_id := NULL;
        IF fc_cab_given(body, 'driver_user_id') THEN
            n := fc_arg_number(body, 'driver_user_id', 1, NULL);
            SELECT du.id INTO c.driver_user_id
              FROM users du
             WHERE du.id = n AND du.org_id = u.org_id
               AND du.role = 'driver';
            IF c.driver_user_id IS NULL THEN
                PERFORM fc_cab_invalid(format(
                    'driver_user_id: not a driver of your '
                    'organization: %s',
                    fc_cab_quote(body -> 'driver_user_id')));
            END IF;
        END IF;
    END IF;

    IF body ? 'driver_name' THEN
        c.driver_name := fc_cab_arg_opt_text(body, 'driver_name', 200);
    END IF;

    IF body ? 'vehicle_plate' THEN
        c.vehicle_plate := fc_cab_arg_opt_text(body, 'vehicle_plate', 20);
    END IF;

    IF body ? 'tank_capacity_ml' THEN
        c.tank_capacity_ml := NULL;
        IF fc_cab_given(body, 'tank_capacity_ml') THEN
            c.tank_capacity_ml := fc_arg_number(body, 'tank_capacity_ml',
                                                1, 10000000);
        END IF;
    END IF;

    IF body ? 'allowed_fuel' THEN
        c.allowed_fuel := '{}';
        arr := COALESCE(fc_cab_arg_array(body, 'allowed_fuel', 50), '[]');
        FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
            t := fc_cab_item_text(arr, 'allowed_fuel', i, 32);
            IF NOT EXISTS (SELECT 1 FROM products p
                            WHERE p.code = t AND p.grp = 'fuel')
            THEN
                PERFORM fc_cab_invalid(format(
                    'allowed_fuel[%s]: not a fuel product: %s',
                    i, fc_cab_quote(arr -> i)));
            END IF;
            IF NOT t = ANY (c.allowed_fuel) THEN
                c.allowed_fuel := c.allowed_fuel || t;
            END IF;
        END LOOP;
    END IF;

    UPDATE cards
       SET group_id = c.group_id, driver_name = c.driver_name,
           driver_user_id = c.driver_user_id,
           vehicle_plate = c.vehicle_plate,
           tank_capacity_ml = c.tank_capacity_ml,
           allowed_fuel = c.allowed_fuel
     WHERE id = c.id
    RETURNING * INTO c;

    -- the audit names the fields that changed with their new values
    SELECT COALESCE(jsonb_object_agg(n_.key, n_.value), '{}'::jsonb)
      INTO changed
      FROM jsonb_each(to_jsonb(c)) n_
      JOIN jsonb_each(to_jsonb(old)) o_ ON o_.key = n_.key
     WHERE n_.value IS DISTINCT FROM o_.value;

    IF changed = '{}'::jsonb THEN
        RETURN fc_ok(200, fc_card_json(c));
    END IF;

    PERFORM fc_audit(u, 'card_update', 'card', c.id::text, req,
                     jsonb_build_object('changed', changed));

    -- group and fuels are hot state; the rest is not, but rewriting the
    -- card's keys is cheap and keeps one code path
    cmds := fc_hot_card_cmds(c.id);

    -- the card's fills leave the old group's counters for the new one's
    IF c.group_id IS DISTINCT FROM old.group_id THEN
        cmds := cmds || fc_hot_limit_cmds(c.contract_id);
    END IF;

    RETURN fc_cab_with_redis(fc_ok(200, fc_card_json(c)), cmds);
END
$$;


-- Returns the limit described by body (id, created_at and usage not
-- set) after checking every field against its kind and scope; raises
-- 422 naming the first field that is wrong.  The ids it names must be
-- of u's organization.  Keys "id" and "usage" are accepted and ignored
-- so that a client may send back what it read.
--
-- Bounds: amount up to 10^11 kopecks (a billion roubles), volume up to
-- 10^10 ml (ten thousand cubic metres), count up to 10^6.  A time
-- window starts at 00:00 to 23:59 and ends at 00:00 to 24:00 (an end
-- before the start wraps past midnight), never where it starts.
CREATE OR REPLACE FUNCTION fc_cab_limit_parse(u users, body jsonb)
    RETURNS limits
LANGUAGE plpgsql AS $$
DECLARE
    l        limits;
    k        contracts;
    g        card_groups;
    c        cards;
    arr      jsonb;
    i        int;
    n        bigint;
    t        text;
    unit_    text;
    kind_    text;
    days     text[] := ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat',
                             'sun'];
BEGIN
    PERFORM fc_cab_known_fields(body, ARRAY[
        'id', 'name', 'scope', 'contract_id', 'group_id', 'card_id',
        'kind', 'product_scope', 'product_group', 'product_code',
        'period', 'value', 'weekdays', 'time_from', 'time_to', 'geo_mode',
        'station_ids', 'networks', 'regions', 'usage']);

    l.name := fc_cab_arg_opt_text(body, 'name', 100);

    -- what the limit is attached to
    l.scope := fc_cab_arg_enum(body, 'scope',
                               ARRAY['contract', 'group', 'card']);

    IF l.scope = 'contract' THEN
        n := fc_arg_number(body, 'contract_id', 1, NULL);
        SELECT * INTO k FROM contracts
         WHERE id = n AND org_id = u.org_id;
        IF k.id IS NULL THEN
            PERFORM fc_cab_invalid(format(
                'contract_id: not a contract of yours: %s',
                fc_cab_quote(body -> 'contract_id')));
        END IF;
        PERFORM fc_cab_forbid(body, 'group_id',
                              'only with scope "group"');
        PERFORM fc_cab_forbid(body, 'card_id', 'only with scope "card"');

    ELSIF l.scope = 'group' THEN
        n := fc_arg_number(body, 'group_id', 1, NULL);
        SELECT cg.* INTO g
          FROM card_groups cg
          JOIN contracts ck ON ck.id = cg.contract_id
         WHERE cg.id = n AND ck.org_id = u.org_id;
        IF g.id IS NULL THEN
            PERFORM fc_cab_invalid(format(
                'group_id: not a card group of yours: %s',
                fc_cab_quote(body -> 'group_id')));
        END IF;
        SELECT * INTO k FROM contracts WHERE id = g.contract_id;
        l.group_id := g.id;
        PERFORM fc_cab_forbid(body, 'card_id', 'only with scope "card"');

    ELSE
        n := fc_arg_number(body, 'card_id', 1, NULL);
        SELECT * INTO c FROM fc_cab_cards_of(u) vc WHERE vc.id = n;
        IF c.id IS NULL THEN
            PERFORM fc_cab_invalid(format(
                'card_id: not a card of yours: %s',
                fc_cab_quote(body -> 'card_id')));
        END IF;
        SELECT * INTO k FROM contracts WHERE id = c.contract_id;
        l.card_id := c.id;
        PERFORM fc_cab_forbid(body, 'group_id',
                              'only with scope "group"');
    END IF;

    IF l.scope <> 'contract' AND fc_cab_given(body, 'contract_id')
       AND fc_arg_number(body, 'contract_id', 1, NULL) <> k.id
    THEN
        PERFORM fc_cab_invalid(format(
            'contract_id: the %s belongs to contract %s, got %s',
            l.scope, k.id, fc_cab_quote(body -> 'contract_id')));
    END IF;

    l.contract_id := k.id;

    -- which products it covers
    kind_ := fc_cab_arg_enum(body, 'kind',
                             ARRAY['amount', 'volume', 'count', 'time',
                                   'geo']);
    l.kind := kind_;
    l.product_scope := fc_cab_arg_enum(body, 'product_scope',
                                       ARRAY['all', 'group', 'product'],
                                       false, 'all');

    IF l.product_scope = 'group' THEN
        l.product_group := fc_cab_arg_enum(body, 'product_group',
                                           ARRAY['fuel', 'goods',
                                                 'services']);
    ELSE
        PERFORM fc_cab_forbid(body, 'product_group',
                              'only with product_scope "group"');
    END IF;

    IF l.product_scope = 'product' THEN
        t := fc_arg_text(body, 'product_code', 32);
        SELECT p.code, p.unit INTO l.product_code, unit_
          FROM products p WHERE p.code = t;
        IF l.product_code IS NULL THEN
            PERFORM fc_cab_invalid(format(
                'product_code: no such product: %s',
                fc_cab_quote(body -> 'product_code')));
        END IF;
        IF kind_ = 'volume' AND unit_ <> 'l' THEN
            PERFORM fc_cab_invalid(format(
                'product_code: a volume limit needs a product sold by '
                'the litre, got %s', fc_cab_quote(body -> 'product_code')));
        END IF;
    ELSE
        PERFORM fc_cab_forbid(body, 'product_code',
                              'only with product_scope "product"');
    END IF;

    -- what it limits
    IF kind_ IN ('amount', 'volume', 'count') THEN
        l.period := fc_cab_arg_enum(body, 'period',
                                    ARRAY['txn', 'day', 'week', 'month',
                                          'quarter', 'year', 'once']);
        l.value := fc_arg_number(body, 'value', 0,
                              CASE kind_
                                  WHEN 'amount' THEN 100000000000
                                  WHEN 'volume' THEN 10000000000
                                  ELSE 1000000 END);
    ELSE
        PERFORM fc_cab_forbid(body, 'period',
                              'only for kinds amount, volume and count');
        PERFORM fc_cab_forbid(body, 'value',
                              'only for kinds amount, volume and count');
    END IF;

    IF kind_ = 'time' THEN
        arr := fc_cab_arg_array(body, 'weekdays', 7);
        IF arr IS NULL OR jsonb_array_length(arr) = 0 THEN
            PERFORM fc_cab_invalid(
                'weekdays: is required, e.g. ["mon","tue","wed"]');
        END IF;
        l.weekdays := 0;
        FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
            IF jsonb_typeof(arr -> i) <> 'string'
               OR NOT (arr ->> i) = ANY (days)
            THEN
                PERFORM fc_cab_invalid(format(
                    'weekdays[%s]: must be one of %s, got %s',
                    i, array_to_string(days, ', '),
                    fc_cab_quote(arr -> i)));
            END IF;
            -- bit 0 is Monday
            l.weekdays := l.weekdays
                          | (1 << (array_position(days, arr ->> i) - 1));
        END LOOP;

        l.time_from := fc_cab_arg_hhmm(body, 'time_from');
        l.time_to := fc_cab_arg_hhmm(body, 'time_to');
        -- 24:00 ends a day and starts none: from 24:00 to 00:00 would
        -- be a window that never opens
        IF l.time_from = 1440 THEN
            PERFORM fc_cab_invalid(format(
                'time_from: must be a time "HH:MM" from 00:00 to 23:59, '
                'got %s', fc_cab_quote(body -> 'time_from')));
        END IF;
        -- time_from > time_to is a window across midnight
        IF l.time_from = l.time_to THEN
            PERFORM fc_cab_invalid(format(
                'time_to: must differ from time_from, got %s',
                fc_cab_quote(body -> 'time_to')));
        END IF;
    ELSE
        PERFORM fc_cab_forbid(body, 'weekdays', 'only for kind time');
        PERFORM fc_cab_forbid(body, 'time_from', 'only for kind time');
        PERFORM fc_cab_forbid(body, 'time_to', 'only for kind time');
    END IF;

    IF kind_ = 'geo' THEN
        l.geo_mode := fc_cab_arg_enum(body, 'geo_mode',
                                      ARRAY['allow', 'deny']);
        l.station_ids := '{}';
        l.networks := '{}';
        l.regions := '{}';

        arr := COALESCE(fc_cab_arg_array(body, 'station_ids', 1000), '[]');
        FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
            n := fc_cab_item_int(arr, 'station_ids', i, 1, NULL);
            IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.id = n) THEN
                PERFORM fc_cab_invalid(format(
                    'station_ids[%s]: no such station: %s',
                    i, fc_cab_quote(arr -> i)));
            END IF;
            IF NOT n = ANY (l.station_ids) THEN
                l.station_ids := l.station_ids || n;
            END IF;
        END LOOP;

        arr := COALESCE(fc_cab_arg_array(body, 'networks', 100), '[]');
        FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
            t := fc_cab_item_text(arr, 'networks', i, 64);
            IF NOT t = ANY (l.networks) THEN
                l.networks := l.networks || t;
            END IF;
        END LOOP;

        arr := COALESCE(fc_cab_arg_array(body, 'regions', 100), '[]');
        FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
            t := fc_cab_item_text(arr, 'regions', i, 64);
            IF NOT t = ANY (l.regions) THEN
                l.regions := l.regions || t;
            END IF;
        END LOOP;

        IF cardinality(l.station_ids) + cardinality(l.networks)
           + cardinality(l.regions) = 0
        THEN
            PERFORM fc_cab_invalid(
                'station_ids: a geo limit needs at least one station, '
                'network or region');
        END IF;
    ELSE
        PERFORM fc_cab_forbid(body, 'geo_mode', 'only for kind geo');
        PERFORM fc_cab_forbid(body, 'station_ids', 'only for kind geo');
        PERFORM fc_cab_forbid(body, 'networks', 'only for kind geo');
        PERFORM fc_cab_forbid(body, 'regions', 'only for kind geo');
        l.station_ids := '{}';
        l.networks := '{}';
        l.regions := '{}';
    END IF;

    RETURN l;
END
$$;


-- ---------------------------------------------------------------------
-- Stations
-- ---------------------------------------------------------------------

-- Returns a coordinate in degrees for a JSON answer: rounded to 6
-- decimals (about 0.1 m), without trailing zeros.  A double precision
-- printed as it is keeps up to 17 digits, most of them noise.
CREATE FUNCTION fc_coord_json(degrees double precision) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT trim_scale(round(degrees::numeric, 6))
$$;


-- GET /mobile/v1/stations?lat=&lon=&radius_km=&product=&limit=: the
-- stations within radius_km (0.1 to 500, default 25) of the point,
-- nearest first, at most `limit` (1 to 100, default 20).  With product
-- only the stations that sell it, with today's price (the newest price
-- in force on today's Moscow date).  Distances are great-circle
-- (haversine) in whole metres; coordinates have 6 decimals.
CREATE OR REPLACE FUNCTION fc_route_mobile_stations(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u         users := fc_mobile_user(req);
    q         jsonb := fc_cab_query(req);
    p_lat     double precision;
    p_lon     double precision;
    radius_m  double precision;
    dlat      double precision;
    dlon      double precision := 360;
    product_  text;
    size      int;
    today     date := (fc_now(req) AT TIME ZONE 'Europe/Moscow')::date;
    items     jsonb;
BEGIN
    p_lat := fc_cab_arg_decimal(q, 'lat', -90, 90);
    p_lon := fc_cab_arg_decimal(q, 'lon', -180, 180);
    radius_m := 1000 * fc_cab_arg_decimal(q, 'radius_km', 0.1, 500, 25);
    size := fc_cab_page_size(req, 20, 100);

    product_ := fc_cab_arg_opt_text(q, 'product', 32);
    IF product_ IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM products p WHERE p.code = product_)
    THEN
        RETURN fc_error(422, 'validation_failed', format(
            'product: no such product: %s',
            fc_cab_quote(q -> 'product')));
    END IF;

    -- a box around the circle lets the (lat, lon) index cut the scan;
    -- a degree of latitude is at least 110.5 km, and near a pole or
    -- across the date line the longitude is simply not narrowed
    dlat := radius_m / 110500.0;
    IF abs(p_lat) + dlat < 89 THEN
        dlon := dlat / cos(radians(abs(p_lat) + dlat));
        IF p_lon - dlon < -180 OR p_lon + dlon > 180 THEN
            dlon := 360;
        END IF;
    END IF;

    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'id', st.id, 'code', st.code, 'name', st.name,
               'network', st.network, 'own', st.own,
               'address', st.address, 'region', st.region,
               'lat', fc_coord_json(st.lat),
               'lon', fc_coord_json(st.lon),
               'distance_m', round(st.dist)::bigint,
               'product_code', st.product_code, 'price', st.price)
               ORDER BY st.dist, st.id), '[]'::jsonb)
      INTO items
      FROM (SELECT *
              FROM (SELECT s.*, pr.product_code, pr.price,
                           2 * 6371008.8 * asin(least(1, sqrt(
                               power(sin(radians(s.lat - p_lat) / 2), 2)
                               + cos(radians(p_lat)) * cos(radians(s.lat))
                                 * power(sin(radians(s.lon - p_lon) / 2),
                                         2))))
                               AS dist
                      FROM stations s
                      LEFT JOIN LATERAL (
                               SELECT sp.product_code, sp.price
                                 FROM station_prices sp
                                WHERE sp.station_id = s.id
                                  AND sp.product_code = product_
                                  AND sp.effective_from <= today
                                ORDER BY sp.effective_from DESC
                                LIMIT 1) pr ON true
                     WHERE s.lat BETWEEN p_lat - dlat AND p_lat + dlat
                       AND (dlon >= 360
                            OR s.lon BETWEEN p_lon - dlon
                                         AND p_lon + dlon)
                       AND (product_ IS NULL OR pr.price IS NOT NULL)) d
             WHERE d.dist <= radius_m
             ORDER BY d.dist, d.id
             LIMIT size) st;

    RETURN fc_ok(200, jsonb_build_object('items', items));
END
$$;

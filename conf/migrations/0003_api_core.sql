-- The core of the SQL API: the dispatcher fc_api(), the helpers every
-- route uses (arguments, errors, the caller's identity, the JSON shapes
-- of cards, contracts and limits, limit usage, the Redis layout), the
-- terminal routes after authorization, the expiry of holds, the hot
-- state for fcctl rebuild and compare, and the product catalogue.
--
-- docs/processing.md explains the convention: nginx calls
-- fc_api(route, request) in one transaction and gets back the status,
-- the body and the Redis commands that bring the hot copy up to date.

-- A limit may carry a name chosen by the client; without one,
-- fc_limit_name() makes one up from the kind, value and period.
ALTER TABLE limits ADD COLUMN name text;


-- ---------------------------------------------------------------------
-- Answers, errors and the clock
-- ---------------------------------------------------------------------

-- Returns the time the request happens at: the test clock's "now" when
-- the request carries one, else the time fc_api() was entered (so that
-- helpers without a request see the same clock), else now().
CREATE FUNCTION fc_now(req jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce((req ->> 'now')::timestamptz,
                    nullif(current_setting('fc.now', true), '')::timestamptz,
                    now())
$$;


-- Returns the clock of the current fc_api() call for helpers that have
-- no request at hand.
CREATE FUNCTION fc_clock() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT fc_now(NULL)
$$;


-- Returns a successful answer {"status": .., "body": ..}.
CREATE FUNCTION fc_ok(status int, body jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', status, 'body', body)
$$;


-- Returns an error answer {"status": .., "error": {"code", "message"}}
-- for a route that has written nothing.
CREATE FUNCTION fc_error(status int, code text, message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', status,
                              'error', jsonb_build_object('code', code,
                                                          'message', message))
$$;


-- Never returns: raises SQLSTATE FC<status> with the error code in HINT,
-- which rolls back the route's writes; nginx answers <status> with the
-- code and the message.
CREATE FUNCTION fc_raise(status int, code text, message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'FC' || lpad(status::text, 3, '0'),
                          MESSAGE = message,
                          HINT = code;
END
$$;


-- Returns the JSON text of j without the blanks jsonb's text output
-- puts after ':' and ',' ({"k":"5:2026-12-04","u":"volume"}): the form
-- Redis hash fields hold.
CREATE FUNCTION fc_json_compact(j jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r  text;
BEGIN
    CASE jsonb_typeof(j)
    WHEN 'object' THEN
        SELECT '{' || coalesce(string_agg(to_jsonb(e.key)::text || ':'
                                          || fc_json_compact(e.value), ','
                                          ORDER BY e.n), '') || '}'
          INTO r
          FROM jsonb_each(j) WITH ORDINALITY AS e(key, value, n);
        RETURN r;
    WHEN 'array' THEN
        SELECT '[' || coalesce(string_agg(fc_json_compact(e.value), ','
                                          ORDER BY e.n), '') || ']'
          INTO r
          FROM jsonb_array_elements(j) WITH ORDINALITY AS e(value, n);
        RETURN r;
    ELSE
        RETURN j::text;
    END CASE;
END
$$;


-- ---------------------------------------------------------------------
-- Arguments
--
-- Each helper takes an object (the body, or req->'query' whose values
-- nginx passes as strings), the field name and the bounds, and either
-- returns the value or raises FC422 validation_failed with a message
-- that names the field and quotes what was sent.  An absent field and
-- a JSON null are the same: NULL when not required, an error when
-- required.
-- ---------------------------------------------------------------------

-- Returns how a bad value is quoted in a message: a string as it is, any
-- other JSON as its text, both in double quotes; null as null.
CREATE FUNCTION fc_arg_quote(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
           WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN 'null'
           WHEN jsonb_typeof(v) = 'string' THEN '"' || (v #>> '{}') || '"'
           ELSE '"' || fc_json_compact(v) || '"'
           END
$$;


-- Returns the whole number in obj->field within [min, max] (max NULL:
-- no upper bound), or NULL when absent and not required.  A JSON number
-- whose text has '.', 'e' or 'E' is rejected as fractional; a string of
-- digits is accepted, because query parameters arrive as strings.  Use
-- fc_arg_number() where only a JSON number will do.
CREATE FUNCTION fc_arg_int(obj jsonb, field text, min bigint, max bigint,
                           required boolean DEFAULT true) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb := obj -> field;
    t  text;
    n  numeric;
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

    IF t ~ '^-?[0-9]{1,20}$' THEN
        n := t::numeric;
        IF n >= min AND (max IS NULL OR n <= max) THEN
            RETURN n::bigint;
        END IF;
    END IF;

    PERFORM fc_raise(422, 'validation_failed',
                     format('%s: must be a whole number %s, got %s', field,
                            CASE WHEN max IS NULL THEN '>= ' || min
                                 ELSE format('from %s to %s', min, max)
                            END,
                            fc_arg_quote(v)));
    RETURN NULL;
END
$$;


-- Returns the whole number in obj->field like fc_arg_int(), but only
-- from a JSON number: a string, even of digits, is rejected.  For the
-- fields of a JSON body.
CREATE FUNCTION fc_arg_number(obj jsonb, field text, min bigint, max bigint,
                              required boolean DEFAULT true) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF jsonb_typeof(obj -> field) = 'string' THEN
        PERFORM fc_raise(422, 'validation_failed',
                         format('%s: must be a whole number %s, got %s',
                                field,
                                CASE WHEN max IS NULL THEN '>= ' || min
                                     ELSE format('from %s to %s', min, max)
                                END,
                                fc_arg_quote(obj -> field)));
    END IF;

    RETURN fc_arg_int(obj, field, min, max, required);
END
$$;


-- Returns the string in obj->field, at most maxlen characters, or NULL
-- when absent and not required.  A required string must not be empty.
CREATE FUNCTION fc_arg_text(obj jsonb, field text, maxlen int,
                            required boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb := obj -> field;
    t  text;
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
        IF length(t) <= maxlen AND (length(t) > 0 OR NOT required) THEN
            RETURN t;
        END IF;
    END IF;

    PERFORM fc_raise(422, 'validation_failed',
                     format('%s: must be a string of %s to %s characters, '
                            'got %s', field,
                            CASE WHEN required THEN 1 ELSE 0 END, maxlen,
                            CASE WHEN jsonb_typeof(v) = 'string'
                                 THEN format('%s characters',
                                             length(v #>> '{}'))
                                 ELSE fc_arg_quote(v)
                            END));
    RETURN NULL;
END
$$;


-- Returns the date YYYY-MM-DD in obj->field, or NULL when absent and
-- not required.
CREATE FUNCTION fc_arg_date(obj jsonb, field text,
                            required boolean DEFAULT true) RETURNS date
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb := obj -> field;
    t  text;
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
        IF t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
           AND substr(t, 6, 2)::int BETWEEN 1 AND 12
           AND substr(t, 9, 2)::int BETWEEN 1 AND
               extract(day FROM make_date(substr(t, 1, 4)::int,
                                          substr(t, 6, 2)::int, 1)
                                + interval '1 month' - interval '1 day')
           AND substr(t, 1, 4)::int >= 1
        THEN
            RETURN t::date;
        END IF;
    END IF;

    PERFORM fc_raise(422, 'validation_failed',
                     format('%s: must be a date YYYY-MM-DD, got %s',
                            field, fc_arg_quote(v)));
    RETURN NULL;
END
$$;


-- Returns params[n] of the request's path (n counts from 0, as jsonb's
-- -> does) as an id; raises FC404 not_found when it is not a positive
-- integer, exactly as for an id that does not exist.
CREATE FUNCTION fc_path_id(req jsonb, n int) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t  text := req -> 'params' ->> n;
BEGIN
    IF t ~ '^[0-9]{1,19}$' AND t::numeric BETWEEN 1 AND 9223372036854775807
    THEN
        RETURN t::bigint;
    END IF;

    PERFORM fc_raise(404, 'not_found', 'not found');
    RETURN NULL;
END
$$;


-- ---------------------------------------------------------------------
-- Who is asking
-- ---------------------------------------------------------------------

-- Returns the lowercase hex SHA-256 of a text, the form in which keys,
-- tokens and CSRF tokens are stored.
CREATE FUNCTION fc_sha256_hex(t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex')
$$;


-- Returns the user of the cabinet session cookie (req->>'session', the
-- SHA-256 of the cookie, computed by nginx); FC401 unauthorized without
-- a live session.  A request that may change something (any method but
-- GET and HEAD) must also carry the session's CSRF token: FC403
-- otherwise.
CREATE FUNCTION fc_session_user(req jsonb) RETURNS users
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s  sessions;
    u  users;
BEGIN
    SELECT * INTO s
      FROM sessions
     WHERE token_hash = req ->> 'session'
       AND expires_at > fc_now(req);

    IF NOT FOUND THEN
        PERFORM fc_raise(401, 'unauthorized',
                         'not logged in or the session has expired');
    END IF;

    SELECT * INTO STRICT u FROM users WHERE id = s.user_id;

    IF coalesce(req ->> 'method', 'GET') NOT IN ('GET', 'HEAD')
       AND (req ->> 'csrf' IS NULL
            OR fc_sha256_hex(req ->> 'csrf') <> s.csrf_hash)
    THEN
        PERFORM fc_raise(403, 'forbidden', 'missing or wrong X-CSRF-Token');
    END IF;

    RETURN u;
END
$$;


-- Returns the user of the mobile access token (req->>'bearer', the
-- SHA-256 of the token); FC401 unauthorized when it is unknown, revoked
-- or expired.
CREATE FUNCTION fc_mobile_user(req jsonb) RETURNS users
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u  users;
BEGIN
    SELECT users.* INTO u
      FROM mobile_tokens t
      JOIN users ON users.id = t.user_id
     WHERE t.access_hash = req ->> 'bearer'
       AND t.revoked_at IS NULL
       AND t.access_expires > fc_now(req);

    IF NOT FOUND THEN
        PERFORM fc_raise(401, 'unauthorized',
                         'missing, expired or revoked access token');
    END IF;

    RETURN u;
END
$$;


-- Returns nothing when u has one of roles; FC403 forbidden otherwise.
CREATE FUNCTION fc_require_role(u users, VARIADIC roles text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF u.role IS NULL OR NOT u.role = ANY (roles) THEN
        PERFORM fc_raise(403, 'forbidden',
                         format('the role %s may not do this',
                                coalesce(u.role, 'none')));
    END IF;
END
$$;


-- Returns the contract if it belongs to u's organization; FC404 when it
-- does not exist or belongs to another; FC403 for an operator, who has
-- no organization.
CREATE FUNCTION fc_contract_of(u users, contract_id bigint) RETURNS contracts
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c  contracts;
BEGIN
    IF u.org_id IS NULL THEN
        PERFORM fc_raise(403, 'forbidden',
                         'an operator has no contracts of its own');
    END IF;

    SELECT * INTO c
      FROM contracts
     WHERE id = fc_contract_of.contract_id
       AND org_id = u.org_id;

    IF NOT FOUND THEN
        PERFORM fc_raise(404, 'not_found',
                         format('no contract %s', contract_id));
    END IF;

    RETURN c;
END
$$;


-- Returns the card if it belongs to a contract of u's organization and,
-- for a driver, is assigned to u; FC404 otherwise (FC403 for an
-- operator).
CREATE FUNCTION fc_card_of(u users, card_id bigint) RETURNS cards
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c  cards;
BEGIN
    IF u.org_id IS NULL THEN
        PERFORM fc_raise(403, 'forbidden',
                         'an operator has no cards of its own');
    END IF;

    SELECT cards.* INTO c
      FROM cards
      JOIN contracts ON contracts.id = cards.contract_id
     WHERE cards.id = fc_card_of.card_id
       AND contracts.org_id = u.org_id
       AND (u.role <> 'driver' OR cards.driver_user_id = u.id);

    IF NOT FOUND THEN
        PERFORM fc_raise(404, 'not_found', format('no card %s', card_id));
    END IF;

    RETURN c;
END
$$;


-- Records what u did to which object; u may be a null row (a login with
-- an unknown e-mail).
CREATE FUNCTION fc_audit(u users, action text, object_type text,
                         object_id text, req jsonb,
                         details jsonb DEFAULT '{}') RETURNS void
LANGUAGE sql AS $$
    INSERT INTO audit_log (at, user_id, org_id, action, object_type,
                           object_id, ip, details)
    VALUES (fc_now(req), u.id, u.org_id, action, object_type, object_id,
            req ->> 'ip', coalesce(details, '{}'))
$$;


-- ---------------------------------------------------------------------
-- JSON of cards and contracts
-- ---------------------------------------------------------------------

-- Returns the card object of docs/api.md; the number is always masked.
CREATE FUNCTION fc_card_json(c cards) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', c.id,
               'contract_id', c.contract_id,
               'number', c.pan_masked,
               'status', c.status,
               'expires', to_char(c.expires, 'YYYY-MM-DD'),
               'driver_name', c.driver_name,
               'driver_user_id', c.driver_user_id,
               'vehicle_plate', c.vehicle_plate,
               'tank_capacity_ml', c.tank_capacity_ml,
               'allowed_fuel', to_jsonb(c.allowed_fuel),
               'group_id', c.group_id)
$$;


-- Returns the sum of the amounts held for a contract's authorizations
-- that are neither completed, reversed nor expired.
CREATE FUNCTION fc_contract_holds(contract_id bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(approved_amount), 0)::bigint
      FROM pos_auths
     WHERE pos_auths.contract_id = fc_contract_holds.contract_id
       AND state = 'held'
$$;


-- Returns the contract object of docs/api.md: the balance, the holds
-- and what may still be spent (balance + credit - holds).  The low
-- balance warning is reached when the available amount falls below the
-- contract's threshold.
CREATE FUNCTION fc_contract_json(c contracts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', c.id,
               'number', c.number,
               'status', c.status,
               'balance', m.balance,
               'credit_limit', c.credit_limit,
               'holds', m.holds,
               'available', m.balance + c.credit_limit - m.holds,
               'low_balance', c.low_balance,
               'low_balance_reached',
               m.balance + c.credit_limit - m.holds < c.low_balance)
      FROM (SELECT coalesce((SELECT b.balance
                               FROM contract_balances b
                              WHERE b.contract_id = c.id), 0) AS balance,
                   fc_contract_holds(c.id) AS holds) m
$$;


-- ---------------------------------------------------------------------
-- Limits: periods, usage and JSON
-- ---------------------------------------------------------------------

-- Returns the period of a limit that contains the moment at, in the
-- time zone tz: its key as docs/processing.md spells it (the key of the
-- Redis counter) and its bounds [starts, ends).  'once' spans all time;
-- 'txn' has no period: key, starts and ends are NULL.
CREATE FUNCTION fc_period_bounds(tz text, at timestamptz, period text,
                                 OUT period_key text,
                                 OUT starts timestamptz,
                                 OUT ends timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    loc    timestamp := at AT TIME ZONE tz;
    field  text;
    step   interval;
BEGIN
    CASE period
    WHEN 'day' THEN
        field := 'day';     step := interval '1 day';
        period_key := to_char(loc, 'YYYY-MM-DD');
    WHEN 'week' THEN
        field := 'week';    step := interval '1 week';
        period_key := to_char(loc, 'IYYY-"W"IW');
    WHEN 'month' THEN
        field := 'month';   step := interval '1 month';
        period_key := to_char(loc, 'YYYY-MM');
    WHEN 'quarter' THEN
        field := 'quarter'; step := interval '3 months';
        period_key := to_char(loc, 'YYYY-"Q"Q');
    WHEN 'year' THEN
        field := 'year';    step := interval '1 year';
        period_key := to_char(loc, 'YYYY');
    WHEN 'once' THEN
        period_key := 'once';
        starts := '-infinity';
        ends := 'infinity';
        RETURN;
    ELSE
        RETURN;
    END CASE;

    starts := date_trunc(field, loc) AT TIME ZONE tz;
    ends := (date_trunc(field, loc) + step) AT TIME ZONE tz;
END
$$;


-- Returns what a quantity limit has used in [starts, ends), derived from
-- the authorizations: the definition the Redis counters must match.
--
-- An authorization counts when it belongs to the limit's contract, was
-- authorized in the period, its card is in the limit's scope (the card,
-- the cards now in the group, every card of the contract) and its
-- product in the limit's product scope.  A hold counts what it approved
-- (amount, volume, 1).  A completion counts what was dispensed less
-- what was refunded, and 1 unless nothing was dispensed (amount and
-- volume 0) or the whole amount was refunded.  Reversed, expired and
-- declined authorizations count nothing.  A per-transaction limit, and
-- a limit that is no quantity, has used 0.
CREATE FUNCTION fc_limit_used(l limits, starts timestamptz,
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
$$;


-- Returns an amount of kopecks or millilitres as a decimal number of
-- roubles or litres for people to read: "100", "12.5", "0.05".
CREATE FUNCTION fc_minor_units_text(v bigint, per bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
           WHEN v % per = 0 THEN (v / per)::text
           ELSE rtrim((v / per)::text || '.'
                      || lpad((abs(v) % per)::text,
                              length((per - 1)::text), '0'), '0')
           END
$$;


-- Returns minutes after midnight as "HH:MM" ("24:00" for 1440).
CREATE FUNCTION fc_minutes_text(m int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT lpad((m / 60)::text, 2, '0') || ':' || lpad((m % 60)::text, 2, '0')
$$;


-- Returns the limit's own name, or one made from what it limits:
-- "card 100 L/day", "group 5000 RUB/month AI-95", "contract 3 txn/week",
-- "card 200 L total", "card hours 07:00-18:00", "group denied stations".
CREATE FUNCTION fc_limit_name(l limits) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(nullif(l.name, ''),
                    l.scope || ' '
                    || CASE l.kind
                       WHEN 'amount' THEN
                           fc_minor_units_text(l.value, 100) || ' RUB'
                       WHEN 'volume' THEN
                           fc_minor_units_text(l.value, 1000) || ' L'
                       WHEN 'count' THEN
                           l.value || ' txn'
                       WHEN 'time' THEN
                           'hours ' || fc_minutes_text(l.time_from) || '-'
                           || fc_minutes_text(l.time_to)
                       WHEN 'geo' THEN
                           CASE l.geo_mode WHEN 'allow' THEN 'allowed'
                                           ELSE 'denied' END || ' stations'
                       END
                    || CASE
                       WHEN l.kind NOT IN ('amount', 'volume', 'count') THEN ''
                       WHEN l.period = 'once' THEN ' total'
                       ELSE '/' || l.period
                       END
                    || CASE l.product_scope
                       WHEN 'group' THEN ' ' || l.product_group
                       WHEN 'product' THEN ' ' || l.product_code
                       ELSE ''
                       END)
$$;


-- Returns the organization's time zone for a contract.
CREATE FUNCTION fc_contract_tz(contract_id bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT o.timezone
      FROM contracts c
      JOIN organizations o ON o.id = c.org_id
     WHERE c.id = contract_id
$$;


-- Returns the limit object of docs/api.md, with the usage of the
-- period that contains at for a quantity limit (null for time and geo
-- limits; used 0 for a per-transaction limit).
CREATE FUNCTION fc_limit_json(l limits, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pb     record;
    used   bigint;
    usage  jsonb;
    wd     jsonb;
BEGIN
    IF l.kind IN ('amount', 'volume', 'count') THEN
        pb := fc_period_bounds(fc_contract_tz(l.contract_id), at, l.period);
        used := CASE WHEN l.period = 'txn' THEN 0
                     ELSE fc_limit_used(l, pb.starts, pb.ends)
                END;
        usage := jsonb_build_object(
                     'period_key', pb.period_key,
                     'period_start', pb.starts,
                     'period_end', pb.ends,
                     'used', used,
                     'remaining', greatest(l.value - used, 0));
        IF l.period = 'once' THEN
            usage := usage || '{"period_start": null, "period_end": null}';
        END IF;
    END IF;

    IF l.kind = 'time' THEN
        SELECT coalesce(jsonb_agg(d.name ORDER BY d.bit), '[]')
          INTO wd
          FROM unnest(ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])
               WITH ORDINALITY AS d(name, bit)
         WHERE l.weekdays & (1 << (d.bit::int - 1)) <> 0;
    END IF;

    RETURN jsonb_build_object(
               'id', l.id,
               'name', fc_limit_name(l),
               'scope', l.scope,
               'contract_id', l.contract_id,
               'group_id', l.group_id,
               'card_id', l.card_id,
               'kind', l.kind,
               'product_scope', l.product_scope,
               'product_group', l.product_group,
               'product_code', l.product_code,
               'period', l.period,
               'value', l.value,
               'weekdays', wd,
               'time_from', fc_minutes_text(l.time_from),
               'time_to', fc_minutes_text(l.time_to),
               'geo_mode', l.geo_mode,
               'station_ids', to_jsonb(l.station_ids),
               'networks', to_jsonb(l.networks),
               'regions', to_jsonb(l.regions),
               'usage', usage);
END
$$;


-- ---------------------------------------------------------------------
-- The Redis layout
--
-- docs/processing.md lists the keys.  The functions fc_hot_*_rows()
-- describe what a key must hold as rows (key, kind, value): kind
-- 'string' with a JSON string, 'hash' with an object of field -> string,
-- 'zset' with an object of member -> score.  fc_hot_state() returns
-- those rows for fcctl rebuild and compare; the write-through helpers
-- fc_hot_*_cmds() turn the same rows into commands, so the layout is
-- written here once.
-- ---------------------------------------------------------------------

-- How long a limit counter lives after it is written: 400 days, in
-- seconds.
CREATE FUNCTION fc_hot_use_ttl() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 34560000::bigint
$$;


-- Returns the {fc}:term:* rows of the active terminals.
CREATE FUNCTION fc_hot_term_rows()
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT '{fc}:term:' || t.key_hash, 'string',
           to_jsonb(fc_json_compact(jsonb_build_object(
               'id', t.id, 'station', s.id, 'network', s.network,
               'region', s.region)))
      FROM terminals t
      JOIN stations s ON s.id = t.station_id
     WHERE t.status = 'active'
$$;


-- Returns the {fc}:prod:<code> rows of the catalogue.
CREATE FUNCTION fc_hot_prod_rows()
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT '{fc}:prod:' || p.code, 'string',
           to_jsonb(fc_json_compact(jsonb_build_object('grp', p.grp,
                                                       'unit', p.unit)))
      FROM products p
$$;


-- Returns the rows of cards: each card's hash and its {fc}:pan key.
-- p_contract NULL: of every contract; p_card NULL: every card.
CREATE FUNCTION fc_hot_card_rows(p_contract bigint, p_card bigint)
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT r.key, r.kind, r.value
      FROM cards c
      JOIN contracts k ON k.id = c.contract_id
      JOIN organizations o ON o.id = k.org_id
     CROSS JOIN LATERAL (VALUES
         (1, format('{c:%s}:card:%s', c.contract_id, c.id), 'hash',
          jsonb_build_object('status', c.status,
                             'exp', to_char(c.expires, 'YYYYMMDD'),
                             'fuel', array_to_string(c.allowed_fuel, ','))),
         (2, '{fc}:pan:' || c.pan_hash, 'string',
          to_jsonb(fc_json_compact(jsonb_build_object(
              'ctr', c.contract_id, 'card', c.id,
              'grp', coalesce(c.group_id, 0), 'tz', o.timezone))))
     ) AS r (n, key, kind, value)
     WHERE (p_contract IS NULL OR c.contract_id = p_contract)
       AND (p_card IS NULL OR c.id = p_card)
     ORDER BY c.id, r.n
$$;


-- Returns the {c:ID}:ctr rows: status, balance and its version, credit
-- and the sum of the holds.
CREATE FUNCTION fc_hot_ctr_rows(p_contract bigint)
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT format('{c:%s}:ctr', k.id), 'hash',
           jsonb_build_object('status', k.status,
                              'balance', coalesce(b.balance, 0)::text,
                              'ver', coalesce(b.version, 0)::text,
                              'credit', k.credit_limit::text,
                              'holds', fc_contract_holds(k.id)::text)
      FROM contracts k
      LEFT JOIN contract_balances b ON b.contract_id = k.id
     WHERE p_contract IS NULL OR k.id = p_contract
     ORDER BY k.id
$$;


-- Returns the limit as JSON for a lim hash: only the fields its kind
-- uses (docs/processing.md).
CREATE FUNCTION fc_hot_limit_json(l limits) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'id', l.id,
               'kind', l.kind,
               'ps', l.product_scope,
               'pg', l.product_group,
               'pc', l.product_code,
               'name', fc_limit_name(l))
           || CASE l.kind
              WHEN 'time' THEN
                  jsonb_build_object('wd', l.weekdays, 'tf', l.time_from,
                                     'tt', l.time_to)
              WHEN 'geo' THEN
                  jsonb_build_object('gm', l.geo_mode,
                                     'st', to_jsonb(l.station_ids),
                                     'nw', to_jsonb(l.networks),
                                     'rg', to_jsonb(l.regions))
              ELSE
                  jsonb_build_object('period', l.period, 'value', l.value)
              END)
$$;


-- Returns the Redis key of the lim hash that holds a limit.
CREATE FUNCTION fc_hot_limit_key(l limits) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('{c:%s}:lim:', l.contract_id)
           || CASE l.scope
              WHEN 'card' THEN 'card:' || l.card_id
              WHEN 'group' THEN 'grp:' || l.group_id
              ELSE 'ctr'
              END
$$;


-- Returns the lim hashes of the contracts (p_contract NULL: all) and the
-- counters of the period that contains at of their quantity limits:
-- every counter when all_counters, else only those with used > 0.
CREATE FUNCTION fc_hot_limit_rows(p_contract bigint, at timestamptz,
                                  all_counters boolean)
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT fc_hot_limit_key(l), 'hash',
           jsonb_object_agg(l.id::text, fc_json_compact(fc_hot_limit_json(l))
                            ORDER BY l.id)
      FROM limits l
     WHERE p_contract IS NULL OR l.contract_id = p_contract
     GROUP BY fc_hot_limit_key(l)
    UNION ALL
    SELECT u.key, 'string', to_jsonb(u.used::text)
      FROM (SELECT format('{c:%s}:use:%s:%s', l.contract_id, l.id,
                          pb.period_key) AS key,
                   fc_limit_used(l, pb.starts, pb.ends) AS used
              FROM limits l
             CROSS JOIN LATERAL fc_period_bounds(
                            fc_contract_tz(l.contract_id), at, l.period) pb
             WHERE (p_contract IS NULL OR l.contract_id = p_contract)
               AND l.kind IN ('amount', 'volume', 'count')
               AND l.period <> 'txn') u
     WHERE all_counters OR u.used > 0
$$;


-- Returns the hold hashes and the holds zset of the contracts
-- (p_contract NULL: all) for their authorizations in state 'held'.
CREATE FUNCTION fc_hot_hold_rows(p_contract bigint)
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT format('{c:%s}:hold:%s', a.contract_id, a.auth_id), 'hash',
           jsonb_build_object(
               'card', a.card_id::text,
               'amount', a.approved_amount::text,
               'volume', a.approved_volume_ml::text,
               'exp', floor(extract(epoch FROM a.expires_at))::bigint::text,
               'usage', fc_json_compact(a.usage))
      FROM pos_auths a
     WHERE a.state = 'held'
       AND (p_contract IS NULL OR a.contract_id = p_contract)
    UNION ALL
    SELECT format('{c:%s}:holds', a.contract_id), 'zset',
           jsonb_object_agg(a.auth_id::text,
                            floor(extract(epoch FROM a.expires_at))::bigint)
      FROM pos_auths a
     WHERE a.state = 'held'
       AND (p_contract IS NULL OR a.contract_id = p_contract)
     GROUP BY a.contract_id
$$;


-- Returns the commands that make a key hold what a row describes: a
-- hash and a zset are deleted and written whole (del false: written
-- over, for hashes whose fields never change), a string is SET, a limit
-- counter with its time to live.
CREATE FUNCTION fc_hot_row_cmds(key text, kind text, value jsonb,
                                del boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cmds  jsonb := '[]';
    cmd   jsonb;
BEGIN
    CASE kind
    WHEN 'string' THEN
        cmd := jsonb_build_array('SET', key, value);
        IF key ~ '^\{c:[0-9]+\}:use:' THEN
            cmd := cmd || jsonb_build_array('EX', fc_hot_use_ttl());
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


-- Returns the commands that rewrite a card's hash and its {fc}:pan key
-- (an empty array for a card that does not exist).  The hash always has
-- the same three fields, so it is written over, never deleted first:
-- an authorization running in between never finds it missing.
CREATE FUNCTION fc_hot_card_cmds(card_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(c.cmd ORDER BY r.n, c.n), '[]')
      FROM fc_hot_card_rows(NULL, card_id) WITH ORDINALITY AS r(key, kind,
                                                                value, n),
           jsonb_array_elements(fc_hot_row_cmds(r.key, r.kind, r.value,
                                                false))
           WITH ORDINALITY AS c(cmd, n)
$$;


-- Returns the commands that rewrite the {c:ID}:ctr hash of a contract;
-- its fields never change, so it is written over.
--
-- The hash carries the balance, its version and the sum of the holds as
-- PostgreSQL knows them when the calling transaction reads them.  An
-- authorization whose hold is placed in Redis but not yet recorded, or
-- a settlement running in between, is not in those values: this is for
-- a rebuild and for contracts whose status or credit change, where the
-- window is a few milliseconds, and the hold or balance is put right by
-- the next settlement or fcctl rebuild.
CREATE FUNCTION fc_hot_contract_cmds(contract_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(c.cmd ORDER BY c.n), '[]')
      FROM fc_hot_ctr_rows(contract_id) r,
           jsonb_array_elements(fc_hot_row_cmds(r.key, r.kind, r.value,
                                                false))
           WITH ORDINALITY AS c(cmd, n)
$$;


-- Returns the commands that rewrite every lim hash of a contract and set
-- the counter of the current period of each quantity limit to what
-- PostgreSQL says was used.  A hash whose scope no longer has a limit
-- (its last limit deleted or moved) must go too, so one DEL first names
-- the lim keys of the contract, every group and every card that have no
-- limit now; each remaining hash is deleted and written just before it
-- is needed again.
CREATE FUNCTION fc_hot_limit_cmds(contract_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p_contract  bigint := contract_id;
    cmds        jsonb;
    stale       jsonb;
BEGIN
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

    RETURN cmds;
END
$$;


-- Returns every key Redis should hold according to PostgreSQL, for
-- fcctl rebuild and compare: the active terminals, the products, and of
-- every contract its ctr hash, card hashes, lim hashes, the counters of
-- the current period that are above 0, the hold hashes and the holds
-- zset, with the {fc}:pan keys of its cards.  With p_contract, only that
-- contract's keys and its cards' pan keys.  The results of
-- authorizations (txn keys) are not included: they only serve retries
-- and PostgreSQL answers those when Redis has lost them.
CREATE FUNCTION fc_hot_state(p_contract bigint DEFAULT NULL)
    RETURNS TABLE (key text, kind text, value jsonb)
LANGUAGE sql STABLE AS $$
    SELECT * FROM fc_hot_term_rows() WHERE p_contract IS NULL
    UNION ALL
    SELECT * FROM fc_hot_prod_rows() WHERE p_contract IS NULL
    UNION ALL
    SELECT * FROM fc_hot_ctr_rows(p_contract)
    UNION ALL
    SELECT * FROM fc_hot_card_rows(p_contract, NULL)
    UNION ALL
    SELECT * FROM fc_hot_limit_rows(p_contract, fc_clock(), false)
    UNION ALL
    SELECT * FROM fc_hot_hold_rows(p_contract)
$$;


-- ---------------------------------------------------------------------
-- The dispatcher
-- ---------------------------------------------------------------------

-- Returns the answer of the route's function fc_route_<route>(req), or
-- 404 not_found for a route that has none.  The request's clock is
-- kept for the transaction, so that helpers without the request
-- (fc_clock()) run on the same time as the route.
CREATE FUNCTION fc_api(route text, req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    answer  jsonb;
BEGIN
    IF route IS NULL OR route !~ '^[a-z_]{1,60}$'
       OR to_regprocedure(format('fc_route_%s(jsonb)', route)) IS NULL
    THEN
        RETURN fc_error(404, 'not_found',
                        format('no route %s', fc_arg_quote(to_jsonb(route))));
    END IF;

    PERFORM set_config('fc.now', fc_now(req)::text, true);

    EXECUTE format('SELECT fc_route_%s($1)', route) INTO answer USING req;

    RETURN answer;
END
$$;


-- ---------------------------------------------------------------------
-- The terminals: recording an authorization, completion, reversal and
-- refund
--
-- nginx decides an authorization in Redis (conf/lua/authorize.lua) and
-- records it with fc_pos_authorize_record() before it answers.  The
-- other three operations are decided here first: each locks the
-- authorization's row, so that two operations on one fill are taken
-- one after the other, writes the ledger and the client's transaction,
-- keeps its answer in pos_operations under the terminal's own id, and
-- returns the script that makes Redis follow.  A retry under the same
-- id gets the kept answer and no Redis command at all.
-- ---------------------------------------------------------------------

-- Returns the terminal of the request's bearer key (req->>'bearer', its
-- SHA-256 computed by nginx); FC401 unauthorized when the key is unknown
-- or the terminal disabled.
CREATE FUNCTION fc_pos_terminal(req jsonb) RETURNS terminals
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t  terminals;
BEGIN
    SELECT * INTO t
      FROM terminals
     WHERE key_hash = req ->> 'bearer'
       AND status = 'active';

    IF NOT FOUND THEN
        PERFORM fc_raise(401, 'unauthorized',
                         'unknown or disabled terminal key');
    END IF;

    RETURN t;
END
$$;


-- Returns the terminal's own operation id from body->'terminal_txn_id':
-- 1 to 64 characters of A-Z a-z 0-9 - _ . :
CREATE FUNCTION fc_pos_txn_id(body jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t  text := fc_arg_text(body, 'terminal_txn_id', 64);
BEGIN
    IF t !~ '^[A-Za-z0-9._:-]+$' THEN
        PERFORM fc_raise(422, 'validation_failed',
                         format('terminal_txn_id: may contain only A-Z a-z '
                                '0-9 - _ . :, got %s',
                                fc_arg_quote(to_jsonb(t))));
    END IF;

    RETURN t;
END
$$;


-- Returns body->'auth_id' as a uuid; FC422 when it is not one.
CREATE FUNCTION fc_pos_auth_id(body jsonb) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t  text := fc_arg_text(body, 'auth_id', 36);
BEGIN
    IF t !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    THEN
        PERFORM fc_raise(422, 'validation_failed',
                         format('auth_id: must be a UUID, got %s',
                                fc_arg_quote(to_jsonb(t))));
    END IF;

    RETURN t::uuid;
END
$$;


-- Returns the answer kept for an operation the terminal already made
-- under this terminal_txn_id, or NULL when it is new.  The same id used
-- for another operation or another authorization is a conflict.
CREATE FUNCTION fc_pos_replay(term terminals, txn_id text, kind text,
                              auth_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    op  pos_operations;
BEGIN
    SELECT * INTO op
      FROM pos_operations o
     WHERE o.terminal_id = term.id
       AND o.terminal_txn_id = txn_id;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF op.kind <> kind OR op.auth_id <> auth_id THEN
        RETURN fc_error(409, 'conflict',
                        format('terminal_txn_id %s was already used for '
                               'another operation',
                               fc_arg_quote(to_jsonb(txn_id))));
    END IF;

    RETURN fc_ok(200, op.response);
END
$$;


-- Returns the authorization, locked for the rest of the transaction,
-- when it was made at the terminal's station; NULL otherwise (another
-- station must not learn that it exists).
CREATE FUNCTION fc_pos_lock_auth(term terminals, auth_id uuid)
    RETURNS pos_auths
LANGUAGE plpgsql AS $$
DECLARE
    a  pos_auths;
BEGIN
    SELECT * INTO a
      FROM pos_auths p
     WHERE p.auth_id = fc_pos_lock_auth.auth_id
       AND p.station_id = term.station_id
       FOR UPDATE;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    RETURN a;
END
$$;


-- Keeps the answer of a terminal operation under its terminal_txn_id.
-- Another transaction may have taken the same id for another fill in
-- the meantime: that is a conflict, and everything is rolled back.
CREATE FUNCTION fc_pos_keep(term terminals, txn_id text, a pos_auths,
                            kind text, volume_ml bigint, amount bigint,
                            response jsonb, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pos_operations (terminal_id, terminal_txn_id, auth_id, kind,
                                volume_ml, amount, response, created_at)
    VALUES (term.id, txn_id, a.auth_id, kind, volume_ml, amount, response,
            at)
    ON CONFLICT (terminal_id, terminal_txn_id) DO NOTHING;

    IF NOT FOUND THEN
        PERFORM fc_raise(409, 'conflict',
                         format('terminal_txn_id %s was already used for '
                                'another operation',
                                fc_arg_quote(to_jsonb(txn_id))));
    END IF;
END
$$;


-- Returns why an authorization in the given state cannot be completed,
-- reversed or refunded, for the 409 message.
CREATE FUNCTION fc_pos_state_text(a pos_auths) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE a.state
           WHEN 'held' THEN 'is not completed'
           WHEN 'completed' THEN
               'was already completed by terminal_txn_id '
               || coalesce((SELECT '"' || o.terminal_txn_id || '"'
                              FROM pos_operations o
                             WHERE o.auth_id = a.auth_id
                               AND o.kind = 'complete'
                             LIMIT 1), 'unknown')
           WHEN 'reversed' THEN 'was reversed'
           WHEN 'expired' THEN 'expired and its hold was released'
           ELSE 'was declined'
           END
$$;


-- Records the decision nginx took in Redis for an authorization, once:
-- a retry under the same (terminal_id, terminal_txn_id) writes nothing
-- and gets the first record.  An approval holds its amount until
-- authorized_at + hold_ttl seconds.  Returns {"stored": whether this call
-- wrote it, "auth_id", "response"} of the record that stands; nginx
-- answers the terminal with that response and releases its new hold when
-- the record is an older one.  rec->'now' is the test clock, as in a
-- request.
CREATE FUNCTION fc_pos_authorize_record(rec jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at      timestamptz := fc_now(rec);
    held    boolean := rec ->> 'status' IN ('approved', 'partial');
    a       pos_auths;
BEGIN
    INSERT INTO pos_auths (auth_id, terminal_id, terminal_txn_id,
                           station_id, card_id, contract_id, pan_masked,
                           product_code, unit_price, requested_volume_ml,
                           requested_amount, status, decline_code, limit_id,
                           approved_volume_ml, approved_amount, state, usage,
                           response, authorized_at, expires_at)
    VALUES ((rec ->> 'auth_id')::uuid,
            rec ->> 'terminal_id',
            rec ->> 'terminal_txn_id',
            (rec ->> 'station_id')::bigint,
            (rec ->> 'card_id')::bigint,
            (rec ->> 'contract_id')::bigint,
            rec ->> 'pan_masked',
            rec ->> 'product_code',
            (rec ->> 'unit_price')::bigint,
            nullif((rec ->> 'requested_volume_ml')::bigint, 0),
            nullif((rec ->> 'requested_amount')::bigint, 0),
            rec ->> 'status',
            rec ->> 'decline_code',
            (rec ->> 'limit_id')::bigint,
            coalesce((rec ->> 'approved_volume_ml')::bigint, 0),
            coalesce((rec ->> 'approved_amount')::bigint, 0),
            CASE WHEN held THEN 'held' ELSE 'declined' END,
            coalesce(rec -> 'usage', '[]'),
            rec -> 'response',
            at,
            CASE WHEN held
                 THEN at + (rec ->> 'hold_ttl')::bigint * interval '1 second'
            END)
    ON CONFLICT (terminal_id, terminal_txn_id) DO NOTHING
    RETURNING * INTO a;

    IF FOUND THEN
        RETURN jsonb_build_object('stored', true, 'auth_id', a.auth_id,
                                  'response', a.response);
    END IF;

    SELECT * INTO STRICT a
      FROM pos_auths
     WHERE terminal_id = rec ->> 'terminal_id'
       AND terminal_txn_id = rec ->> 'terminal_txn_id';

    RETURN jsonb_build_object('stored', false, 'auth_id', a.auth_id,
                              'response', a.response);
END
$$;


-- POST /pos/v1/complete: debits the contract with what was dispensed
-- (no more than approved) and releases the rest of the hold.  Returns
-- 200 {"status":"completed", ...} with the settle script for Redis.
CREATE FUNCTION fc_route_pos_complete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at         timestamptz := fc_now(req);
    body       jsonb := req -> 'body';
    term       terminals;
    txn_id     text;
    auth_id    uuid;
    volume_ml  bigint;
    amount     bigint;
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
-- hold.  Returns 200 {"status":"reversed", ...} with the release script.
CREATE FUNCTION fc_route_pos_reverse(req jsonb) RETURNS jsonb
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


-- POST /pos/v1/refund: gives back money and limit usage of a completed
-- fill, in one go or in parts that together never exceed what was
-- completed.  Returns 200 {"status":"refunded", ...} with the totals
-- refunded so far and the refund script for Redis.
CREATE FUNCTION fc_route_pos_refund(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at          timestamptz := fc_now(req);
    body        jsonb := req -> 'body';
    term        terminals;
    txn_id      text;
    auth_id     uuid;
    volume_ml   bigint;
    amount      bigint;
    left_ml     bigint;
    left_kop    bigint;
    count_back  int;
    a           pos_auths;
    b           contract_balances;
    answer      jsonb;
BEGIN
    term := fc_pos_terminal(req);
    txn_id := fc_pos_txn_id(body);
    auth_id := fc_pos_auth_id(body);
    amount := fc_arg_number(body, 'amount', 1, 1000000000000);
    volume_ml := fc_arg_number(body, 'volume_ml', 0, 10000000);

    a := fc_pos_lock_auth(term, auth_id);
    IF a.auth_id IS NULL THEN
        RETURN fc_error(404, 'not_found',
                        format('no authorization %s at this station',
                               auth_id));
    END IF;

    answer := fc_pos_replay(term, txn_id, 'refund', auth_id);
    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    IF a.state <> 'completed' THEN
        RETURN fc_error(409, 'conflict',
                        format('authorization %s %s', auth_id,
                               fc_pos_state_text(a)));
    END IF;

    left_kop := a.completed_amount - a.refunded_amount;
    left_ml := a.completed_volume_ml - a.refunded_volume_ml;

    IF amount > left_kop THEN
        RETURN fc_error(422, 'validation_failed',
                        format('amount: %s is more than the %s left to '
                               'refund', amount, left_kop));
    END IF;

    IF volume_ml > left_ml THEN
        RETURN fc_error(422, 'validation_failed',
                        format('volume_ml: %s is more than the %s left to '
                               'refund', volume_ml, left_ml));
    END IF;

    -- the fill stops counting as a transaction once its whole amount is
    -- back (fc_limit_used)
    count_back := CASE WHEN amount = left_kop THEN 1 ELSE 0 END;

    UPDATE pos_auths
       SET refunded_amount = refunded_amount + amount,
           refunded_volume_ml = refunded_volume_ml + volume_ml
     WHERE pos_auths.auth_id = a.auth_id
    RETURNING * INTO a;

    INSERT INTO ledger (contract_id, amount, kind, ref, description,
                        created_at)
    VALUES (a.contract_id, amount, 'refund',
            a.auth_id::text || ':' || txn_id,
            format('refund of %s at station %s', a.product_code,
                   a.station_id),
            at);

    INSERT INTO transactions (contract_id, card_id, auth_id, kind,
                              station_id, product_code, volume_ml,
                              unit_price, amount, created_at)
    VALUES (a.contract_id, a.card_id, a.auth_id, 'refund', a.station_id,
            a.product_code, -volume_ml, a.unit_price, -amount, at);

    answer := jsonb_build_object('status', 'refunded',
                                 'auth_id', a.auth_id,
                                 'amount', amount,
                                 'volume_ml', volume_ml,
                                 'refunded_amount', a.refunded_amount,
                                 'refunded_volume_ml', a.refunded_volume_ml);

    PERFORM fc_pos_keep(term, txn_id, a, 'refund', volume_ml, amount,
                        answer, at);

    SELECT * INTO b FROM contract_balances WHERE contract_id = a.contract_id;

    RETURN fc_ok(200, answer)
           || jsonb_build_object('redis', jsonb_build_array(
                  jsonb_build_array('SCRIPT', 'refund', 1,
                                    format('{c:%s}:ctr', a.contract_id),
                                    a.auth_id, fc_json_compact(a.usage),
                                    amount, volume_ml, count_back,
                                    b.balance, b.version)));
END
$$;


-- Marks the held authorizations whose hold expired before now as
-- 'expired' and returns them, so that the daemon runs release.lua for
-- each.  Rows another transaction has locked (a completion under way)
-- are skipped; they are either settled by it or found on the next run.
-- The rows are taken in batches to keep each statement small.
CREATE FUNCTION fc_release_expired_holds(now timestamptz DEFAULT now())
    RETURNS TABLE (contract_id bigint, auth_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    batch  CONSTANT int := 500;
    n      bigint;
BEGIN
    LOOP
        RETURN QUERY
        UPDATE pos_auths p
           SET state = 'expired',
               settled_at = fc_release_expired_holds.now
         WHERE p.auth_id IN (SELECT e.auth_id
                               FROM pos_auths e
                              WHERE e.state = 'held'
                                AND e.expires_at <= fc_release_expired_holds.now
                              ORDER BY e.expires_at
                              LIMIT batch
                                FOR UPDATE SKIP LOCKED)
        RETURNING p.contract_id, p.auth_id;

        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n < batch;
    END LOOP;
END
$$;


-- ---------------------------------------------------------------------
-- The product catalogue
-- ---------------------------------------------------------------------

INSERT INTO products (code, name, grp, unit) VALUES
    ('AI-92',   'Petrol AI-92',               'fuel',     'l'),
    ('AI-95',   'Petrol AI-95',               'fuel',     'l'),
    ('AI-98',   'Petrol AI-98',               'fuel',     'l'),
    ('AI-100',  'Petrol AI-100',              'fuel',     'l'),
    ('DT',      'Diesel',                     'fuel',     'l'),
    ('DT-W',    'Winter diesel',              'fuel',     'l'),
    ('DT-A',    'Arctic diesel',              'fuel',     'l'),
    ('LPG',     'Liquefied petroleum gas',    'fuel',     'l'),
    ('CNG',     'Compressed natural gas',     'fuel',     'l'),
    ('ADBLUE',  'AdBlue (diesel exhaust fluid)', 'goods', 'l'),
    ('GOODS',   'Shop goods',                 'goods',    'pcs'),
    ('COFFEE',  'Coffee',                     'goods',    'pcs'),
    ('WASH',    'Car wash',                   'services', 'pcs'),
    ('TYRE',    'Tyre service',               'services', 'pcs'),
    ('PARKING', 'Parking',                    'services', 'pcs'),
    ('TOLL',    'Toll road',                  'services', 'pcs')
ON CONFLICT (code) DO NOTHING;

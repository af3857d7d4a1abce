-- The cabinet and mobile routes of the SQL API: sessions and tokens,
-- contracts, cards, card groups, limits, transactions and stations.
--
-- Every route is one function fc_route_<route>(req jsonb) RETURNS jsonb
-- called through fc_api() (docs/processing.md, "The SQL API").  The
-- shared helpers (fc_session_user, fc_arg_*, fc_card_json,
-- fc_limit_json, fc_hot_*_cmds, ...) come from 0003_api_core.sql; the
-- helpers here carry the prefix fc_cab_ and serve only these routes.
--
-- Who sees what: every object belongs to the user's organization
-- through its contract; a driver sees only the cards assigned to them
-- (cards.driver_user_id) and what hangs off those cards.  An object the
-- user may not see is 404, exactly like one that does not exist, when
-- its id comes from the path or the query; an id in a request body
-- that names such an object is a 422 naming the field.
--
-- Roles: owner and manager manage cards, groups and limits; the
-- accountant reads everything; the driver reads their cards, their
-- transactions and the contracts of their cards, and may block (not
-- unblock) their cards.  Operators work for the platform, not for an
-- organization: the cabinet routes refuse them with 403.
--
-- Lists are paged by a cursor: `limit` rows (1 to 200, default 50) and
-- `next_cursor`, an opaque string to pass back as `cursor`, or null on
-- the last page.


-- Case-insensitive e-mail look-up at login.
CREATE INDEX IF NOT EXISTS users_email_lower_idx ON users (lower(email));


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- Returns a fresh random token of 64 hex digits (two version 4 UUIDs,
-- 244 random bits): used for session cookies, CSRF and mobile tokens.
CREATE FUNCTION fc_cab_token() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text,
                   '-', '')
$$;


-- Returns the cards u may see: every card of u's organization, for a
-- driver only the cards assigned to them.  Simple enough for the
-- planner to inline into the calling query.
CREATE FUNCTION fc_cab_cards_of(u users) RETURNS SETOF cards
LANGUAGE sql STABLE AS $$
    SELECT c.*
      FROM cards c
      JOIN contracts k ON k.id = c.contract_id
     WHERE k.org_id = u.org_id
       AND (u.role <> 'driver' OR c.driver_user_id = u.id)
$$;


-- Returns the time zone of u's organization (Europe/Moscow for an
-- operator, who has none).
CREATE FUNCTION fc_cab_tz(u users) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT COALESCE((SELECT o.timezone FROM organizations o
                      WHERE o.id = u.org_id), 'Europe/Moscow')
$$;


-- Returns ts as RFC 3339 text in the time zone tz with its offset,
-- e.g. "2026-12-04T15:00:00+05:00", whatever the session's TimeZone.
CREATE FUNCTION fc_cab_time(ts timestamptz, tz text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    local_ts  timestamp;
    off       interval;
BEGIN
    IF ts IS NULL THEN
        RETURN NULL;
    END IF;

    local_ts := ts AT TIME ZONE tz;
    off := local_ts - (ts AT TIME ZONE 'UTC');

    RETURN to_char(local_ts, 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN off < interval '0'
                   THEN '-' || to_char(-off, 'HH24:MI')
                   ELSE '+' || to_char(off, 'HH24:MI') END;
END
$$;


-- Returns a value quoted for an error message as fc_arg_quote() does,
-- cut to 64 characters so that a huge input makes no huge answer.
CREATE FUNCTION fc_cab_quote(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(fc_arg_quote(v)) > 64
                THEN left(fc_arg_quote(v), 60) || '..."'
                ELSE fc_arg_quote(v) END
$$;


-- Raises a 422 validation_failed with the given message.
CREATE FUNCTION fc_cab_invalid(message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fc_raise(422, 'validation_failed', message);
END
$$;


-- Returns whether obj has field with a value other than JSON null.
CREATE FUNCTION fc_cab_given(obj jsonb, field text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT obj IS NOT NULL
           AND jsonb_typeof(obj) = 'object'
           AND obj ? field
           AND jsonb_typeof(obj -> field) <> 'null'
$$;


-- Raises 422 when obj has field with a value that means something (not
-- null, not an empty array): the field does not apply, and silently
-- ignoring it would hide the client's mistake.
CREATE FUNCTION fc_cab_forbid(obj jsonb, field text, why text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF fc_cab_given(obj, field) AND obj -> field <> '[]'::jsonb THEN
        PERFORM fc_cab_invalid(format('%s: %s', field, why));
    END IF;
END
$$;


-- Raises 422 naming the first key of obj that is not in known.
CREATE FUNCTION fc_cab_known_fields(obj jsonb, known text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f  text;
BEGIN
    FOR f IN SELECT jsonb_object_keys(obj) ORDER BY 1 LOOP
        IF NOT f = ANY (known) THEN
            PERFORM fc_cab_invalid(format('%s: unknown field',
                                          left(f, 64)));
        END IF;
    END LOOP;
END
$$;


-- Returns the request body, which must be a JSON object (422 else).
-- With optional, a missing or null body is returned as {}.
CREATE FUNCTION fc_cab_body(req jsonb, optional boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    body  jsonb := req -> 'body';
BEGIN
    IF optional AND (body IS NULL OR jsonb_typeof(body) = 'null') THEN
        RETURN '{}'::jsonb;
    END IF;

    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM fc_cab_invalid('body: must be a JSON object');
    END IF;

    RETURN body;
END
$$;


-- Returns the query parameters of the request ({} when none).
CREATE FUNCTION fc_cab_query(req jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(req -> 'query') = 'object'
                THEN req -> 'query' ELSE '{}'::jsonb END
$$;


-- Returns obj->>field when it is one of allowed, dflt when absent and
-- not required; raises 422 otherwise.
CREATE FUNCTION fc_cab_arg_enum(obj jsonb, field text, allowed text[],
                                required boolean DEFAULT true,
                                dflt text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT fc_cab_given(obj, field) THEN
        IF required THEN
            PERFORM fc_cab_invalid(format('%s: is required, one of %s',
                field, array_to_string(allowed, ', ')));
        END IF;
        RETURN dflt;
    END IF;

    IF jsonb_typeof(obj -> field) <> 'string'
       OR NOT (obj ->> field) = ANY (allowed)
    THEN
        PERFORM fc_cab_invalid(format('%s: must be one of %s, got %s',
            field, array_to_string(allowed, ', '),
            fc_cab_quote(obj -> field)));
    END IF;

    RETURN obj ->> field;
END
$$;


-- Returns a trimmed text field, NULL when absent, null or blank; raises
-- 422 when it is not a string or longer than maxlen.
CREATE FUNCTION fc_cab_arg_opt_text(obj jsonb, field text, maxlen int)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t  text;
BEGIN
    IF NOT fc_cab_given(obj, field) THEN
        RETURN NULL;
    END IF;

    t := btrim(fc_arg_text(obj, field, maxlen, false));

    RETURN NULLIF(t, '');
END
$$;


-- Returns the JSON array in obj->field (NULL when absent or null);
-- raises 422 when it is something else or has more than maxlen items.
CREATE FUNCTION fc_cab_arg_array(obj jsonb, field text, maxlen int)
RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT fc_cab_given(obj, field) THEN
        RETURN NULL;
    END IF;

    IF jsonb_typeof(obj -> field) <> 'array' THEN
        PERFORM fc_cab_invalid(format('%s: must be an array, got %s',
                                      field, fc_cab_quote(obj -> field)));
    END IF;

    IF jsonb_array_length(obj -> field) > maxlen THEN
        PERFORM fc_cab_invalid(format('%s: at most %s items, got %s',
            field, maxlen, jsonb_array_length(obj -> field)));
    END IF;

    RETURN obj -> field;
END
$$;


-- Returns the whole number at index i of the array arr, named
-- "field[i]" in errors; raises 422 unless it is from min to max.
CREATE FUNCTION fc_cab_item_int(arr jsonb, field text, i int, min bigint,
                                max bigint)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT fc_arg_number(jsonb_build_object(format('%s[%s]', field, i),
                                         arr -> i),
                      format('%s[%s]', field, i), min, max, true)
$$;


-- Returns the text at index i of the array arr, named "field[i]";
-- raises 422 unless it is a string of 1 to maxlen characters.
CREATE FUNCTION fc_cab_item_text(arr jsonb, field text, i int,
                                 maxlen int)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name  text := format('%s[%s]', field, i);
    t     text;
BEGIN
    t := btrim(fc_arg_text(jsonb_build_object(name, arr -> i), name,
                           maxlen, true));

    IF t = '' THEN
        PERFORM fc_cab_invalid(format('%s: must not be empty', name));
    END IF;

    RETURN t;
END
$$;


-- Returns a decimal number given as a string ("56.8389") or a JSON
-- number, for coordinates and distances (not money: a float is fine);
-- dflt when absent and dflt is not NULL; raises 422 unless it is from
-- min to max.
CREATE FUNCTION fc_cab_arg_decimal(obj jsonb, field text,
                                   min numeric, max numeric,
                                   dflt numeric DEFAULT NULL)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v  jsonb := obj -> field;
    t  text;
    n  numeric;
BEGIN
    IF NOT fc_cab_given(obj, field) AND dflt IS NOT NULL THEN
        RETURN dflt;
    END IF;

    IF jsonb_typeof(v) IN ('string', 'number') THEN
        t := v #>> '{}';
    END IF;

    IF t IS NULL OR t !~ '^-?[0-9]{1,4}(\.[0-9]{1,12})?$' THEN
        PERFORM fc_cab_invalid(format(
            '%s: must be a decimal number from %s to %s, got %s',
            field, min, max, fc_cab_quote(v)));
    END IF;

    n := t::numeric;

    IF n < min OR n > max THEN
        PERFORM fc_cab_invalid(format(
            '%s: must be a decimal number from %s to %s, got %s',
            field, min, max, fc_cab_quote(v)));
    END IF;

    RETURN n::double precision;
END
$$;


-- Returns a time of day "HH:MM" (00:00 to 24:00) as minutes after
-- midnight; raises 422 otherwise.
CREATE FUNCTION fc_cab_arg_hhmm(obj jsonb, field text) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    t  text;
BEGIN
    IF NOT fc_cab_given(obj, field) THEN
        PERFORM fc_cab_invalid(format('%s: is required, "HH:MM"', field));
    END IF;

    IF jsonb_typeof(obj -> field) = 'string' THEN
        t := obj ->> field;
    END IF;

    IF t IS NULL
       OR t !~ '^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$'
    THEN
        PERFORM fc_cab_invalid(format(
            '%s: must be a time "HH:MM" from 00:00 to 24:00, got %s',
            field, fc_cab_quote(obj -> field)));
    END IF;

    RETURN (split_part(t, ':', 1)::int * 60
            + split_part(t, ':', 2)::int)::smallint;
END
$$;


-- Returns the page size of a list: query `limit`, 1 to max, default
-- dflt; raises 422 outside.
CREATE FUNCTION fc_cab_page_size(req jsonb, dflt int DEFAULT 50,
                                 max int DEFAULT 200)
RETURNS int
LANGUAGE sql AS $$
    SELECT COALESCE(fc_arg_int(fc_cab_query(req), 'limit', 1, max,
                               false)::int, dflt)
$$;


-- Returns the id after which a list ordered by id continues: 0 without
-- a cursor; raises 422 for a cursor this kind of list never gave out.
CREATE FUNCTION fc_cab_cursor_id(req jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    q  jsonb := fc_cab_query(req);
BEGIN
    IF NOT fc_cab_given(q, 'cursor') THEN
        RETURN 0;
    END IF;

    IF jsonb_typeof(q -> 'cursor') <> 'string'
       OR (q ->> 'cursor') !~ '^[0-9]{1,18}$'
    THEN
        PERFORM fc_cab_invalid(format(
            'cursor: not a cursor of this list, got %s',
            fc_cab_quote(q -> 'cursor')));
    END IF;

    RETURN (q ->> 'cursor')::bigint;
END
$$;


-- Returns {"items": items, "next_cursor": ..} for a list fetched with
-- one row more than size: if that extra row is there it is dropped and
-- the cursor is the id of the last item kept, else the cursor is null.
CREATE FUNCTION fc_cab_page(items jsonb, size int) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_array_length(items) > size
                THEN jsonb_build_object(
                         'items', items - size,
                         'next_cursor', items -> (size - 1) ->> 'id')
                ELSE jsonb_build_object(
                         'items', items,
                         'next_cursor', NULL) END
$$;


-- Returns the pattern that matches t anywhere in ILIKE, with t's own
-- wildcards taken literally.
CREATE FUNCTION fc_cab_like(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT '%' || regexp_replace(t, '([\\%_])', '\\\1', 'g') || '%'
$$;


-- Returns the user object of the API.
CREATE FUNCTION fc_cab_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id, 'email', u.email,
                              'name', u.name, 'role', u.role,
                              'org_id', u.org_id)
$$;


-- Returns the contract u may see with this id: fc_contract_of, and for
-- a driver only a contract one of their cards belongs to (404 else).
CREATE FUNCTION fc_cab_contract_of(u users, contract_id bigint)
RETURNS contracts
LANGUAGE plpgsql AS $$
DECLARE
    k  contracts;
BEGIN
    k := fc_contract_of(u, contract_id);

    IF u.role = 'driver'
       AND NOT EXISTS (SELECT 1 FROM fc_cab_cards_of(u) c
                        WHERE c.contract_id = k.id)
    THEN
        PERFORM fc_raise(404, 'not_found', 'no such contract');
    END IF;

    RETURN k;
END
$$;


-- Returns the card group of u's organization with this id; raises 404
-- otherwise.
CREATE FUNCTION fc_cab_group_of(u users, group_id bigint)
RETURNS card_groups
LANGUAGE plpgsql AS $$
DECLARE
    g  card_groups;
BEGIN
    SELECT cg.* INTO g
      FROM card_groups cg
      JOIN contracts k ON k.id = cg.contract_id
     WHERE cg.id = group_id AND k.org_id = u.org_id;

    IF g.id IS NULL THEN
        PERFORM fc_raise(404, 'not_found', 'no such card group');
    END IF;

    RETURN g;
END
$$;


-- Returns the card group object of the API.
CREATE FUNCTION fc_cab_group_json(g card_groups) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', g.id, 'contract_id', g.contract_id, 'name', g.name,
        'card_count', (SELECT count(*) FROM cards c
                        WHERE c.group_id = g.id))
$$;


-- Returns every limit that applies to card c (the card's, its group's
-- and its contract's) as limit objects with their usage at `at`,
-- contract-wide ones first.
CREATE FUNCTION fc_cab_card_limits(c cards, at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(jsonb_agg(fc_limit_json(l, at)
                              ORDER BY CASE l.scope WHEN 'contract' THEN 0
                                                    WHEN 'group' THEN 1
                                                    ELSE 2 END, l.id),
                    '[]'::jsonb)
      FROM limits l
     WHERE l.contract_id = c.contract_id
       AND (l.scope = 'contract'
            OR (l.scope = 'group' AND l.group_id = c.group_id)
            OR (l.scope = 'card' AND l.card_id = c.id))
$$;


-- Returns the answer plus the "redis" commands, which are left out
-- when there are none.
CREATE FUNCTION fc_cab_with_redis(answer jsonb, cmds jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN cmds IS NULL OR cmds = '[]'::jsonb THEN answer
                ELSE answer || jsonb_build_object('redis', cmds) END
$$;


-- ---------------------------------------------------------------------
-- Login: the password check in two steps
-- ---------------------------------------------------------------------
--
-- SQL never sees a password check: it hands nginx the stored hash
-- ("verify_password"), nginx verifies the password in its thread pool
-- and calls the "then" function with password_ok.  That second call has
-- no HTTP route, so only nginx can make it.
--
-- An unknown e-mail gets the same first answer with a dummy hash of the
-- same scheme and cost, so the time the answer takes does not tell an
-- attacker which e-mails exist; its second step always fails.
--
-- Failures are counted per user: from the sixth on, each answer waits
-- one more second (at most five); the tenth locks the account for 15
-- minutes.  The count is reset only by a successful login, so a failure
-- after a lock has run out locks again at once.

-- Returns the first step of a login: 429 account_locked while u is
-- locked, else verify_password with the user's hash (or the dummy hash
-- for an unknown e-mail) that continues with the function `then`.
CREATE FUNCTION fc_cab_login_start(req jsonb, email text, then_route text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u      users;
    now_   timestamptz := fc_now(req);
    dummy  CONSTANT text := 'pbkdf2-sha256$100000$QrYFfJDuouASurGHx3xI+A=='
                            '$C3KA1+3NXMnLcqY1aGaKAgykQDTo1pBaO0jw2mg9WKo=';
BEGIN
    SELECT * INTO u
      FROM users
     WHERE lower(users.email) = lower(fc_cab_login_start.email)
     ORDER BY id
     LIMIT 1;

    IF u.id IS NULL THEN
        RETURN jsonb_build_object(
            'status', 200,
            'verify_password', jsonb_build_object(
                'hash', dummy, 'then', then_route,
                'state', jsonb_build_object('user_id', NULL)));
    END IF;

    IF u.locked_until > now_ THEN
        RETURN fc_error(429, 'account_locked',
                        'too many failed logins, try again later')
               || jsonb_build_object('headers', jsonb_build_object(
                      'Retry-After',
                      ceil(extract(epoch FROM u.locked_until - now_))
                          ::bigint::text));
    END IF;

    RETURN jsonb_build_object(
        'status', 200,
        'verify_password', jsonb_build_object(
            'hash', u.password_hash, 'then', then_route,
            'state', jsonb_build_object('user_id', u.id)));
END
$$;


-- Finishes a login after nginx checked the password.  Returns the user
-- in u and answer NULL when the password was right (the failure count
-- is reset), else answer is what to send: 404 unless req comes from
-- nginx with password_ok, 429 while locked, 401 invalid_credentials
-- with delay_ms after a wrong password (counted and audited).
CREATE FUNCTION fc_cab_login_finish(req jsonb, OUT u users,
                                    OUT answer jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    now_     timestamptz := fc_now(req);
    user_id  bigint;
    email    text;
    delay    bigint := 0;
BEGIN
    -- only nginx adds password_ok, after it checked the password
    IF req IS NULL OR NOT req ? 'password_ok'
       OR jsonb_typeof(req -> 'password_ok') <> 'boolean'
    THEN
        answer := fc_error(404, 'not_found', 'no such route');
        RETURN;
    END IF;

    IF jsonb_typeof(req #> '{state,user_id}') = 'number' THEN
        user_id := (req #>> '{state,user_id}')::bigint;
        SELECT * INTO u FROM users WHERE id = user_id FOR UPDATE;
    END IF;

    IF u.id IS NULL THEN
        IF jsonb_typeof(req #> '{body,email}') = 'string' THEN
            email := left(lower(req #>> '{body,email}'), 254);
        END IF;
        PERFORM fc_audit(u, 'login_failed', 'user', NULL, req,
                         jsonb_build_object('email', email,
                                            'reason', 'unknown_email'));
        u := NULL;
        answer := fc_error(401, 'invalid_credentials',
                           'wrong e-mail or password');
        RETURN;
    END IF;

    -- another attempt may have locked the account meanwhile
    IF u.locked_until > now_ THEN
        answer := fc_error(429, 'account_locked',
                           'too many failed logins, try again later')
                  || jsonb_build_object('headers', jsonb_build_object(
                         'Retry-After',
                         ceil(extract(epoch FROM u.locked_until - now_))
                             ::bigint::text));
        u := NULL;
        RETURN;
    END IF;

    IF NOT (req -> 'password_ok')::boolean THEN
        UPDATE users
           SET failed_logins = failed_logins + 1,
               locked_until = CASE WHEN failed_logins + 1 >= 10
                                   THEN now_ + interval '15 minutes'
                                   ELSE locked_until END
         WHERE id = u.id
        RETURNING * INTO u;

        PERFORM fc_audit(u, 'login_failed', 'user', u.id::text, req,
                         jsonb_build_object(
                             'failed_logins', u.failed_logins,
                             'locked', u.failed_logins >= 10));

        IF u.failed_logins > 5 THEN
            delay := least(5000, 1000 * (u.failed_logins - 5));
        END IF;

        answer := fc_error(401, 'invalid_credentials',
                           'wrong e-mail or password');
        IF delay > 0 THEN
            answer := answer || jsonb_build_object('delay_ms', delay);
        END IF;
        u := NULL;
        RETURN;
    END IF;

    IF u.failed_logins <> 0 OR u.locked_until IS NOT NULL THEN
        UPDATE users SET failed_logins = 0, locked_until = NULL
         WHERE id = u.id
        RETURNING * INTO u;
    END IF;
END
$$;


-- Returns a new mobile token pair for user u (only the hashes are
-- stored): access token for 15 minutes, refresh token for 30 days.
CREATE FUNCTION fc_cab_issue_tokens(u users, req jsonb, grant_type text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    now_     timestamptz := fc_now(req);
    access   text := fc_cab_token();
    refresh  text := fc_cab_token();
    token_id bigint;
BEGIN
    INSERT INTO mobile_tokens (user_id, access_hash, refresh_hash,
                               access_expires, refresh_expires,
                               created_at)
    VALUES (u.id, fc_sha256_hex(access), fc_sha256_hex(refresh),
            now_ + interval '15 minutes', now_ + interval '30 days',
            now_)
    RETURNING id INTO token_id;

    PERFORM fc_audit(u, 'token_issue', 'mobile_token', token_id::text, req,
                     jsonb_build_object('grant_type', grant_type));

    RETURN fc_ok(200, jsonb_build_object(
               'access_token', access, 'refresh_token', refresh,
               'token_type', 'Bearer', 'expires_in', 900))
           || jsonb_build_object('headers', jsonb_build_object(
                  'Cache-Control', 'no-store'));
END
$$;


-- ---------------------------------------------------------------------
-- Blocking and unblocking cards
-- ---------------------------------------------------------------------

-- Returns the answer to a block (block true) or unblock of the cards
-- ids, which the caller has checked u may see: {"items":[card]} with
-- the redis commands of the cards that changed; or a 409 before any
-- write when one of them cannot be unblocked (lost, expired by status
-- or by date).  All or nothing: the rows are locked in id order first.
-- A card already in the wanted state is left as it is.
CREATE FUNCTION fc_cab_set_blocked(u users, req jsonb, ids bigint[],
                                   block boolean, via text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c       cards;
    today   date := (fc_now(req) AT TIME ZONE fc_cab_tz(u))::date;
    items   jsonb := '[]'::jsonb;
    cmds    jsonb := '[]'::jsonb;
    target  text := CASE WHEN block THEN 'blocked' ELSE 'active' END;
BEGIN
    PERFORM 1 FROM cards WHERE id = ANY (ids) ORDER BY id FOR UPDATE;

    IF NOT block THEN
        FOR c IN SELECT * FROM cards WHERE id = ANY (ids) ORDER BY id LOOP
            IF c.status IN ('lost', 'expired') THEN
                RETURN fc_error(409, 'conflict', format(
                    'card %s is %s and cannot be unblocked',
                    c.id, c.status));
            END IF;
            IF c.expires < today THEN
                RETURN fc_error(409, 'conflict', format(
                    'card %s expired on %s and cannot be unblocked',
                    c.id, c.expires));
            END IF;
        END LOOP;
    END IF;

    FOR c IN SELECT * FROM cards WHERE id = ANY (ids) ORDER BY id LOOP
        -- blocking a lost or expired card changes nothing: it is
        -- already refused at the pump
        IF c.status <> target AND c.status NOT IN ('lost', 'expired') THEN
            UPDATE cards SET status = target WHERE id = c.id
            RETURNING * INTO c;

            PERFORM fc_audit(u, CASE WHEN block THEN 'block'
                                     ELSE 'unblock' END,
                             'card', c.id::text, req,
                             jsonb_build_object('via', via));
            cmds := cmds || fc_hot_card_cmds(c.id);
        END IF;

        items := items || jsonb_build_array(fc_card_json(c));
    END LOOP;

    RETURN fc_cab_with_redis(fc_ok(200, jsonb_build_object('items', items)),
                             cmds);
END
$$;


-- Returns the answer to blocking or unblocking one card whose id is in
-- the path: the card object, 403 for a role that may not, 404 for a
-- card u may not see.
CREATE FUNCTION fc_cab_block_one(u users, req jsonb, block boolean,
                                 via text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c       cards;
    answer  jsonb;
BEGIN
    IF block THEN
        PERFORM fc_require_role(u, 'owner', 'manager', 'driver');
    ELSE
        PERFORM fc_require_role(u, 'owner', 'manager');
    END IF;

    PERFORM fc_cab_body(req, true);
    c := fc_card_of(u, fc_path_id(req, 0));

    answer := fc_cab_set_blocked(u, req, ARRAY[c.id], block, via);
    IF (answer -> 'status')::int <> 200 THEN
        RETURN answer;
    END IF;

    RETURN jsonb_set(answer, '{body}', answer #> '{body,items,0}');
END
$$;


-- Returns the answer to blocking or unblocking {"card_ids":[...]}:
-- 1 to 500 ids of cards u may see (422 naming the first bad one).
CREATE FUNCTION fc_cab_block_many(u users, req jsonb, block boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    body  jsonb;
    arr   jsonb;
    ids   bigint[] := '{}';
    id_   bigint;
    i     int;
BEGIN
    IF block THEN
        PERFORM fc_require_role(u, 'owner', 'manager', 'driver');
    ELSE
        PERFORM fc_require_role(u, 'owner', 'manager');
    END IF;

    body := fc_cab_body(req);
    PERFORM fc_cab_known_fields(body, ARRAY['card_ids']);
    arr := fc_cab_arg_array(body, 'card_ids', 500);

    IF arr IS NULL OR jsonb_array_length(arr) = 0 THEN
        PERFORM fc_cab_invalid(
            'card_ids: is required, an array of 1 to 500 card ids');
    END IF;

    FOR i IN 0 .. jsonb_array_length(arr) - 1 LOOP
        id_ := fc_cab_item_int(arr, 'card_ids', i, 1, NULL);

        IF NOT EXISTS (SELECT 1 FROM fc_cab_cards_of(u) c
                        WHERE c.id = id_)
        THEN
            RETURN fc_error(422, 'validation_failed', format(
                'card_ids[%s]: not a card of yours: %s',
                i, fc_cab_quote(arr -> i)));
        END IF;

        IF NOT id_ = ANY (ids) THEN
            ids := ids || id_;
        END IF;
    END LOOP;

    RETURN fc_cab_set_blocked(u, req, ids, block, 'cabinet');
END
$$;


-- ---------------------------------------------------------------------
-- Limits: reading a limit from a request body
-- ---------------------------------------------------------------------

-- Returns the limit described by body (id, created_at and usage not
-- set) after checking every field against its kind and scope; raises
-- 422 naming the first field that is wrong.  The ids it names must be
-- of u's organization.  Keys "id" and "usage" are accepted and ignored
-- so that a client may send back what it read.
--
-- Bounds: amount up to 10^11 kopecks (a billion roubles), volume up to
-- 10^10 ml (ten thousand cubic metres), count up to 10^6.
CREATE FUNCTION fc_cab_limit_parse(u users, body jsonb) RETURNS limits
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


-- Returns the limit of u's organization with the id in the path,
-- locked for update; raises 404 otherwise.
CREATE FUNCTION fc_cab_limit_of(u users, req jsonb) RETURNS limits
LANGUAGE plpgsql AS $$
DECLARE
    l  limits;
BEGIN
    SELECT li.* INTO l
      FROM limits li
      JOIN contracts k ON k.id = li.contract_id
     WHERE li.id = fc_path_id(req, 0) AND k.org_id = u.org_id
       FOR UPDATE OF li;

    IF l.id IS NULL THEN
        PERFORM fc_raise(404, 'not_found', 'no such limit');
    END IF;

    RETURN l;
END
$$;


-- ---------------------------------------------------------------------
-- Cabinet routes
-- ---------------------------------------------------------------------

-- POST /api/v1/session {"email","password"}: the first step of a login
-- (see fc_cab_login_start); the password itself is checked by nginx.
CREATE FUNCTION fc_route_session_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    body  jsonb := fc_cab_body(req);
BEGIN
    PERFORM fc_cab_known_fields(body, ARRAY['email', 'password']);

    -- nginx may take the password out of the body before it calls us;
    -- when it is still there it must at least be a string
    IF body ? 'password' THEN
        PERFORM fc_arg_text(body, 'password', 1024);
    END IF;

    RETURN fc_cab_login_start(req, fc_arg_text(body, 'email', 254),
                              'session_finish');
END
$$;


-- Called by nginx (never through HTTP) after checking the password of
-- a session_create: on success 200 {user, csrf_token} and the session
-- cookie (12 hours); else what fc_cab_login_finish says.
CREATE FUNCTION fc_route_session_finish(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    fin    record;
    now_   timestamptz := fc_now(req);
    token  text;
    csrf   text;
BEGIN
    fin := fc_cab_login_finish(req);
    IF fin.answer IS NOT NULL THEN
        RETURN fin.answer;
    END IF;

    token := fc_cab_token();
    csrf := fc_cab_token();

    DELETE FROM sessions
     WHERE user_id = (fin.u).id AND expires_at <= now_;

    INSERT INTO sessions (token_hash, user_id, csrf_hash, created_at,
                          expires_at)
    VALUES (fc_sha256_hex(token), (fin.u).id, fc_sha256_hex(csrf), now_,
            now_ + interval '12 hours');

    PERFORM fc_audit(fin.u, 'login', 'user', (fin.u).id::text, req);

    RETURN fc_ok(200, jsonb_build_object(
               'user', fc_cab_user_json(fin.u),
               'csrf_token', csrf))
           || jsonb_build_object('headers', jsonb_build_object(
                  'Set-Cookie',
                  'fc_session=' || token || '; Path=/; HttpOnly; '
                  'SameSite=Strict; Max-Age=43200',
                  'Cache-Control', 'no-store'));
END
$$;


-- DELETE /api/v1/session: ends the session of the cookie and clears
-- the cookie.
CREATE FUNCTION fc_route_session_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
BEGIN
    DELETE FROM sessions WHERE token_hash = req ->> 'session';

    PERFORM fc_audit(u, 'logout', 'user', u.id::text, req);

    RETURN fc_ok(200, jsonb_build_object('status', 'logged_out'))
           || jsonb_build_object('headers', jsonb_build_object(
                  'Set-Cookie',
                  'fc_session=; Path=/; HttpOnly; SameSite=Strict; '
                  'Max-Age=0'));
END
$$;


-- GET /api/v1/me: the user of the session with their organization
-- (null for an operator).
CREATE FUNCTION fc_route_me(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
BEGIN
    RETURN fc_ok(200, fc_cab_user_json(u) || jsonb_build_object(
        'organization',
        (SELECT jsonb_build_object('id', o.id, 'name', o.name,
                                   'inn', o.inn, 'timezone', o.timezone)
           FROM organizations o WHERE o.id = u.org_id)));
END
$$;


-- GET /api/v1/contracts?limit=&cursor=: the contracts of the
-- organization (for a driver those of their cards), by id.
CREATE FUNCTION fc_route_contracts_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u      users := fc_session_user(req);
    size   int;
    after  bigint;
    items  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');
    size := fc_cab_page_size(req);
    after := fc_cab_cursor_id(req);

    SELECT COALESCE(jsonb_agg(fc_contract_json(k) ORDER BY k.id),
                    '[]'::jsonb)
      INTO items
      FROM (SELECT *
              FROM contracts ck
             WHERE ck.org_id = u.org_id AND ck.id > after
               AND (u.role <> 'driver'
                    OR EXISTS (SELECT 1 FROM fc_cab_cards_of(u) c
                                WHERE c.contract_id = ck.id))
             ORDER BY ck.id
             LIMIT size + 1) k;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- GET /api/v1/contracts/{id}: one contract with balance, holds and
-- available.
CREATE FUNCTION fc_route_contract_get(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');

    RETURN fc_ok(200, fc_contract_json(
                          fc_cab_contract_of(u, fc_path_id(req, 0))));
END
$$;


-- GET /api/v1/contracts/{id}/statement?from=&to=: the ledger of the
-- contract between two dates of the organization's time zone, both
-- inclusive (default: from the first of the month of `to`, to today),
-- with opening and closing balances and the balance after each entry.
-- At most 366 days at once: the statement is not paged.
CREATE FUNCTION fc_route_contract_statement(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u        users := fc_session_user(req);
    q        jsonb := fc_cab_query(req);
    k        contracts;
    tz       text;
    from_d   date;
    to_d     date;
    starts   timestamptz;
    ends     timestamptz;
    opening  bigint;
    closing  bigint;
    entries  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant');
    k := fc_cab_contract_of(u, fc_path_id(req, 0));
    tz := fc_cab_tz(u);

    to_d := COALESCE(fc_arg_date(q, 'to', false),
                     (fc_now(req) AT TIME ZONE tz)::date);
    from_d := COALESCE(fc_arg_date(q, 'from', false),
                       date_trunc('month', to_d)::date);

    IF to_d < from_d THEN
        RETURN fc_error(422, 'validation_failed', format(
            'to: must not be before from (%s), got "%s"', from_d, to_d));
    END IF;
    IF to_d - from_d > 365 THEN
        RETURN fc_error(422, 'validation_failed', format(
            'to: a statement covers at most 366 days, got "%s" to "%s"',
            from_d, to_d));
    END IF;

    starts := from_d::timestamp AT TIME ZONE tz;
    ends := (to_d + 1)::timestamp AT TIME ZONE tz;

    SELECT COALESCE(sum(amount), 0)::bigint INTO opening
      FROM ledger
     WHERE contract_id = k.id AND created_at < starts;

    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'id', e.id, 'at', fc_cab_time(e.created_at, tz),
               'kind', e.kind, 'amount', e.amount, 'ref', e.ref,
               'description', e.description,
               'balance_after', opening + e.running)
               ORDER BY e.created_at, e.id), '[]'::jsonb),
           opening + COALESCE(sum(e.amount), 0)::bigint
      INTO entries, closing
      FROM (SELECT lg.*,
                   sum(lg.amount) OVER (ORDER BY lg.created_at, lg.id)
                       ::bigint AS running
              FROM ledger lg
             WHERE lg.contract_id = k.id
               AND lg.created_at >= starts AND lg.created_at < ends) e;

    RETURN fc_ok(200, jsonb_build_object(
        'contract_id', k.id, 'from', from_d, 'to', to_d,
        'opening_balance', opening, 'closing_balance', closing,
        'entries', entries));
END
$$;


-- GET /api/v1/cards?status=&group_id=&driver=&plate=&q=&limit=&cursor=:
-- the cards u may see, by id.  driver and plate match a part of the
-- driver's name or the plate, q the end of the number, a part of the
-- driver's name or a part of the plate, all ignoring case.
CREATE FUNCTION fc_route_cards_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u        users := fc_session_user(req);
    q        jsonb := fc_cab_query(req);
    size     int;
    after    bigint;
    status_  text;
    group_   bigint;
    driver   text;
    plate    text;
    any_     text;
    items    jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');
    size := fc_cab_page_size(req);
    after := fc_cab_cursor_id(req);
    status_ := fc_cab_arg_enum(q, 'status',
                               ARRAY['active', 'blocked', 'lost',
                                     'expired'], false);
    group_ := fc_arg_int(q, 'group_id', 1, NULL, false);
    IF group_ IS NOT NULL THEN
        PERFORM fc_cab_group_of(u, group_);
    END IF;
    driver := fc_cab_arg_opt_text(q, 'driver', 100);
    plate := fc_cab_arg_opt_text(q, 'plate', 32);
    any_ := fc_cab_arg_opt_text(q, 'q', 100);

    SELECT COALESCE(jsonb_agg(fc_card_json(c) ORDER BY c.id), '[]'::jsonb)
      INTO items
      FROM (SELECT *
              FROM fc_cab_cards_of(u) vc
             WHERE vc.id > after
               AND (status_ IS NULL OR vc.status = status_)
               AND (group_ IS NULL OR vc.group_id = group_)
               AND (driver IS NULL
                    OR vc.driver_name ILIKE fc_cab_like(driver))
               AND (plate IS NULL
                    OR vc.vehicle_plate ILIKE fc_cab_like(plate))
               AND (any_ IS NULL
                    OR (any_ ~ '^[0-9]{1,19}$'
                        AND right(vc.pan_masked, length(any_)) = any_)
                    OR vc.driver_name ILIKE fc_cab_like(any_)
                    OR vc.vehicle_plate ILIKE fc_cab_like(any_))
             ORDER BY vc.id
             LIMIT size + 1) c;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- POST /api/v1/cards/block {"card_ids":[...]}: blocks all the cards or
-- none.
CREATE FUNCTION fc_route_cards_block_many(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_many(fc_session_user(req), req, true);
END
$$;


-- POST /api/v1/cards/unblock {"card_ids":[...]}: unblocks all the cards
-- or none (409 when one of them is lost or expired).
CREATE FUNCTION fc_route_cards_unblock_many(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_many(fc_session_user(req), req, false);
END
$$;


-- GET /api/v1/cards/{id}: the card with every limit that applies to it.
CREATE FUNCTION fc_route_card_get(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
    c  cards;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');
    c := fc_card_of(u, fc_path_id(req, 0));

    RETURN fc_ok(200, fc_card_json(c) || jsonb_build_object(
        'limits', fc_cab_card_limits(c, fc_now(req))));
END
$$;


-- PATCH /api/v1/cards/{id} with any of group_id, driver_name,
-- driver_user_id, vehicle_plate, tank_capacity_ml, allowed_fuel (null
-- clears a field): the updated card.  The group must be of the card's
-- contract, the driver a driver of the organization, the fuels fuel
-- products.
CREATE FUNCTION fc_route_card_update(req jsonb) RETURNS jsonb
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
    RETURN fc_cab_with_redis(fc_ok(200, fc_card_json(c)),
                             fc_hot_card_cmds(c.id));
END
$$;


-- POST /api/v1/cards/{id}/block: the card, blocked.
CREATE FUNCTION fc_route_card_block(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_one(fc_session_user(req), req, true, 'cabinet');
END
$$;


-- POST /api/v1/cards/{id}/unblock: the card, active again (409 when it
-- is lost or expired).
CREATE FUNCTION fc_route_card_unblock(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_one(fc_session_user(req), req, false, 'cabinet');
END
$$;


-- GET /api/v1/card-groups?contract_id=&limit=&cursor=: the card groups
-- of the organization (or of one contract), by id.
CREATE FUNCTION fc_route_groups_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u          users := fc_session_user(req);
    q          jsonb := fc_cab_query(req);
    size       int;
    after      bigint;
    contract_  bigint;
    items      jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant');
    size := fc_cab_page_size(req);
    after := fc_cab_cursor_id(req);
    contract_ := fc_arg_int(q, 'contract_id', 1, NULL,
                            false);
    IF contract_ IS NOT NULL THEN
        PERFORM fc_contract_of(u, contract_);
    END IF;

    SELECT COALESCE(jsonb_agg(fc_cab_group_json(g) ORDER BY g.id),
                    '[]'::jsonb)
      INTO items
      FROM (SELECT cg.*
              FROM card_groups cg
              JOIN contracts k ON k.id = cg.contract_id
             WHERE k.org_id = u.org_id AND cg.id > after
               AND (contract_ IS NULL OR cg.contract_id = contract_)
             ORDER BY cg.id
             LIMIT size + 1) g;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- POST /api/v1/card-groups {"contract_id","name"}: 201 with the new
-- group; 409 when the contract already has a group of that name.
CREATE FUNCTION fc_route_group_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u      users := fc_session_user(req);
    body   jsonb;
    k      contracts;
    n      bigint;
    name_  text;
    g      card_groups;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager');
    body := fc_cab_body(req);
    PERFORM fc_cab_known_fields(body, ARRAY['contract_id', 'name']);

    n := fc_arg_number(body, 'contract_id', 1, NULL);
    SELECT * INTO k FROM contracts WHERE id = n AND org_id = u.org_id;
    IF k.id IS NULL THEN
        RETURN fc_error(422, 'validation_failed', format(
            'contract_id: not a contract of yours: %s',
            fc_cab_quote(body -> 'contract_id')));
    END IF;

    name_ := fc_cab_arg_opt_text(body, 'name', 100);
    IF name_ IS NULL THEN
        RETURN fc_error(422, 'validation_failed', format(
            'name: is required, 1 to 100 characters, got %s',
            fc_cab_quote(body -> 'name')));
    END IF;

    INSERT INTO card_groups (contract_id, name)
    VALUES (k.id, name_)
    ON CONFLICT (contract_id, name) DO NOTHING
    RETURNING * INTO g;

    IF g.id IS NULL THEN
        RETURN fc_error(409, 'conflict', format(
            'name: contract %s already has a group %s',
            k.id, fc_cab_quote(to_jsonb(name_))));
    END IF;

    PERFORM fc_audit(u, 'group_create', 'card_group', g.id::text, req,
                     jsonb_build_object('contract_id', k.id,
                                        'name', name_));

    RETURN fc_ok(201, fc_cab_group_json(g));
END
$$;


-- GET /api/v1/limits?card_id=&group_id=&contract_id=&limit=&cursor=:
-- the limits of the organization, narrowed to those attached to the
-- given card or group or belonging to the given contract, by id, each
-- with its usage now.
CREATE FUNCTION fc_route_limits_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u          users := fc_session_user(req);
    q          jsonb := fc_cab_query(req);
    now_       timestamptz := fc_now(req);
    size       int;
    after      bigint;
    card_      bigint;
    group_     bigint;
    contract_  bigint;
    items      jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant');
    size := fc_cab_page_size(req);
    after := fc_cab_cursor_id(req);

    card_ := fc_arg_int(q, 'card_id', 1, NULL, false);
    IF card_ IS NOT NULL THEN
        PERFORM fc_card_of(u, card_);
    END IF;
    group_ := fc_arg_int(q, 'group_id', 1, NULL, false);
    IF group_ IS NOT NULL THEN
        PERFORM fc_cab_group_of(u, group_);
    END IF;
    contract_ := fc_arg_int(q, 'contract_id', 1, NULL,
                            false);
    IF contract_ IS NOT NULL THEN
        PERFORM fc_contract_of(u, contract_);
    END IF;

    SELECT COALESCE(jsonb_agg(fc_limit_json(l, now_) ORDER BY l.id),
                    '[]'::jsonb)
      INTO items
      FROM (SELECT li.*
              FROM limits li
              JOIN contracts k ON k.id = li.contract_id
             WHERE k.org_id = u.org_id AND li.id > after
               AND (card_ IS NULL OR li.card_id = card_)
               AND (group_ IS NULL OR li.group_id = group_)
               AND (contract_ IS NULL OR li.contract_id = contract_)
             ORDER BY li.id
             LIMIT size + 1) l;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- POST /api/v1/limits: 201 with the new limit and its usage.
CREATE FUNCTION fc_route_limit_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
    l  limits;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager');
    l := fc_cab_limit_parse(u, fc_cab_body(req));

    INSERT INTO limits (contract_id, scope, group_id, card_id,
                        product_scope, product_group, product_code, kind,
                        period, value, weekdays, time_from, time_to,
                        geo_mode, station_ids, networks, regions, name,
                        created_at)
    VALUES (l.contract_id, l.scope, l.group_id, l.card_id,
            l.product_scope, l.product_group, l.product_code, l.kind,
            l.period, l.value, l.weekdays, l.time_from, l.time_to,
            l.geo_mode, l.station_ids, l.networks, l.regions, l.name,
            fc_now(req))
    RETURNING * INTO l;

    PERFORM fc_audit(u, 'limit_create', 'limit', l.id::text, req,
                     jsonb_build_object('limit', to_jsonb(l)));

    RETURN fc_cab_with_redis(fc_ok(201, fc_limit_json(l, fc_now(req))),
                             fc_hot_limit_cmds(l.contract_id));
END
$$;


-- PUT /api/v1/limits/{id}: replaces the limit with the one in the body
-- (every field, as on create); the updated limit.
CREATE FUNCTION fc_route_limit_update(req jsonb) RETURNS jsonb
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


-- DELETE /api/v1/limits/{id}: {"status":"deleted","id"}.
CREATE FUNCTION fc_route_limit_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
    l  limits;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager');
    l := fc_cab_limit_of(u, req);

    DELETE FROM limits WHERE id = l.id;

    PERFORM fc_audit(u, 'limit_delete', 'limit', l.id::text, req,
                     jsonb_build_object('limit', to_jsonb(l)));

    RETURN fc_cab_with_redis(
        fc_ok(200, jsonb_build_object('status', 'deleted', 'id', l.id)),
        fc_hot_limit_cmds(l.contract_id));
END
$$;


-- GET /api/v1/transactions?from=&to=&card_id=&station_id=
-- &product_code=&contract_id=&limit=&cursor=: sales and refunds of the
-- cards u may see, newest first; from and to are dates of the
-- organization's time zone, both inclusive.  The cursor is
-- "<microseconds since 1970>:<id>" of the last item.
CREATE FUNCTION fc_route_transactions_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u          users := fc_session_user(req);
    q          jsonb := fc_cab_query(req);
    tz         text;
    size       int;
    from_d     date;
    to_d       date;
    starts     timestamptz;
    ends       timestamptz;
    card_      bigint;
    station_   bigint;
    product_   text;
    contract_  bigint;
    cur        text;
    after_at   timestamptz := 'infinity';
    after_id   bigint := 0;
    items      jsonb;
    keys       text[];
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');
    tz := fc_cab_tz(u);
    size := fc_cab_page_size(req);

    from_d := fc_arg_date(q, 'from', false);
    to_d := fc_arg_date(q, 'to', false);
    IF from_d IS NOT NULL AND to_d IS NOT NULL AND to_d < from_d THEN
        RETURN fc_error(422, 'validation_failed', format(
            'to: must not be before from (%s), got "%s"', from_d, to_d));
    END IF;
    starts := from_d::timestamp AT TIME ZONE tz;
    ends := (to_d + 1)::timestamp AT TIME ZONE tz;

    card_ := fc_arg_int(q, 'card_id', 1, NULL, false);
    IF card_ IS NOT NULL THEN
        PERFORM fc_card_of(u, card_);
    END IF;
    contract_ := fc_arg_int(q, 'contract_id', 1, NULL,
                            false);
    IF contract_ IS NOT NULL THEN
        PERFORM fc_cab_contract_of(u, contract_);
    END IF;
    station_ := fc_arg_int(q, 'station_id', 1, NULL,
                           false);
    product_ := fc_cab_arg_opt_text(q, 'product_code', 32);

    IF fc_cab_given(q, 'cursor') THEN
        cur := q ->> 'cursor';
        IF jsonb_typeof(q -> 'cursor') <> 'string'
           OR cur !~ '^[0-9]{1,18}:[0-9]{1,18}$'
        THEN
            RETURN fc_error(422, 'validation_failed', format(
                'cursor: not a cursor of this list, got %s',
                fc_cab_quote(q -> 'cursor')));
        END IF;
        after_at := timestamptz 'epoch'
                    + split_part(cur, ':', 1)::bigint
                      * interval '1 microsecond';
        after_id := split_part(cur, ':', 2)::bigint;
    END IF;

    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'id', t.id, 'at', fc_cab_time(t.created_at, tz),
               'kind', t.kind, 'contract_id', t.contract_id,
               'card_id', t.card_id, 'card', t.pan_masked,
               'station_id', t.station_id, 'station_name', s.name,
               'station_address', s.address,
               'product_code', t.product_code, 'volume_ml', t.volume_ml,
               'unit_price', t.unit_price, 'amount', t.amount)
               ORDER BY t.created_at DESC, t.id DESC), '[]'::jsonb),
           array_agg((extract(epoch FROM t.created_at) * 1000000)::bigint
                     || ':' || t.id
                     ORDER BY t.created_at DESC, t.id DESC)
      INTO items, keys
      FROM (SELECT tr.*, vc.pan_masked
              FROM transactions tr
              JOIN fc_cab_cards_of(u) vc ON vc.id = tr.card_id
             WHERE (tr.created_at, tr.id) < (after_at, after_id)
               AND (starts IS NULL OR tr.created_at >= starts)
               AND (ends IS NULL OR tr.created_at < ends)
               AND (card_ IS NULL OR tr.card_id = card_)
               AND (contract_ IS NULL OR tr.contract_id = contract_)
               AND (station_ IS NULL OR tr.station_id = station_)
               AND (product_ IS NULL OR tr.product_code = product_)
             ORDER BY tr.created_at DESC, tr.id DESC
             LIMIT size + 1) t
      JOIN stations s ON s.id = t.station_id;

    IF jsonb_array_length(items) > size THEN
        RETURN fc_ok(200, jsonb_build_object('items', items - size,
                                             'next_cursor', keys[size]));
    END IF;

    RETURN fc_ok(200, jsonb_build_object('items', items,
                                         'next_cursor', NULL));
END
$$;


-- ---------------------------------------------------------------------
-- Mobile routes
-- ---------------------------------------------------------------------

-- POST /mobile/v1/token: grant_type "password" {"email","password"}
-- starts a login that continues in mobile_token_finish; grant_type
-- "refresh_token" {"refresh_token"} replaces the pair of that refresh
-- token with a new one (a refresh token works once: used, revoked or
-- expired it is 401).
CREATE FUNCTION fc_route_mobile_token(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    body   jsonb := fc_cab_body(req);
    grant_ text;
    now_   timestamptz := fc_now(req);
    t      mobile_tokens;
    u      users;
BEGIN
    grant_ := fc_cab_arg_enum(body, 'grant_type',
                              ARRAY['password', 'refresh_token']);

    IF grant_ = 'password' THEN
        PERFORM fc_cab_known_fields(body, ARRAY['grant_type', 'email',
                                                'password']);
        IF body ? 'password' THEN
            PERFORM fc_arg_text(body, 'password', 1024);
        END IF;
        RETURN fc_cab_login_start(req, fc_arg_text(body, 'email', 254),
                                  'mobile_token_finish');
    END IF;

    PERFORM fc_cab_known_fields(body, ARRAY['grant_type',
                                            'refresh_token']);

    SELECT * INTO t
      FROM mobile_tokens
     WHERE refresh_hash = fc_sha256_hex(fc_arg_text(body, 'refresh_token',
                                                    256))
       FOR UPDATE;

    IF t.id IS NULL OR t.revoked_at IS NOT NULL
       OR t.refresh_expires <= now_
    THEN
        RETURN fc_error(401, 'invalid_credentials',
                        'refresh_token: unknown, used, revoked or expired');
    END IF;

    UPDATE mobile_tokens SET revoked_at = now_ WHERE id = t.id;
    SELECT * INTO u FROM users WHERE id = t.user_id;

    RETURN fc_cab_issue_tokens(u, req, 'refresh_token');
END
$$;


-- Called by nginx (never through HTTP) after checking the password of
-- a mobile_token password grant: a new token pair, or what
-- fc_cab_login_finish says.
CREATE FUNCTION fc_route_mobile_token_finish(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    fin  record;
BEGIN
    fin := fc_cab_login_finish(req);
    IF fin.answer IS NOT NULL THEN
        RETURN fin.answer;
    END IF;

    RETURN fc_cab_issue_tokens(fin.u, req, 'password');
END
$$;


-- DELETE /mobile/v1/token: revokes the token pair whose access token
-- authorized the request.
CREATE FUNCTION fc_route_mobile_token_revoke(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u         users := fc_mobile_user(req);
    token_id  bigint;
BEGIN
    UPDATE mobile_tokens SET revoked_at = fc_now(req)
     WHERE access_hash = req ->> 'bearer' AND revoked_at IS NULL
    RETURNING id INTO token_id;

    PERFORM fc_audit(u, 'logout', 'mobile_token', token_id::text, req);

    RETURN fc_ok(200, jsonb_build_object('status', 'revoked'));
END
$$;


-- GET /mobile/v1/cards: the cards the user may see (a driver their own,
-- the other roles every card of the organization, at most 200), each
-- with a summary of its contract and the limits that apply to it.
CREATE FUNCTION fc_route_mobile_cards(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u      users := fc_mobile_user(req);
    now_   timestamptz := fc_now(req);
    items  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant',
                            'driver');

    SELECT COALESCE(jsonb_agg(
               fc_card_json(c) || jsonb_build_object(
                   'contract', (SELECT jsonb_build_object(
                                    'id', kj -> 'id',
                                    'number', kj -> 'number',
                                    'balance', kj -> 'balance',
                                    'available', kj -> 'available')
                                  FROM fc_contract_json(k) kj),
                   'limits', fc_cab_card_limits(c, now_))
               ORDER BY c.id), '[]'::jsonb)
      INTO items
      FROM (SELECT * FROM fc_cab_cards_of(u) vc
             ORDER BY vc.id LIMIT 200) c
      JOIN contracts k ON k.id = c.contract_id;

    RETURN fc_ok(200, jsonb_build_object('items', items));
END
$$;


-- POST /mobile/v1/cards/{id}/block: the card, blocked.
CREATE FUNCTION fc_route_mobile_card_block(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_one(fc_mobile_user(req), req, true, 'mobile');
END
$$;


-- POST /mobile/v1/cards/{id}/unblock: the card, active again (owner
-- and manager only; 409 when it is lost or expired).
CREATE FUNCTION fc_route_mobile_card_unblock(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN fc_cab_block_one(fc_mobile_user(req), req, false, 'mobile');
END
$$;


-- GET /mobile/v1/stations?lat=&lon=&radius_km=&product=&limit=: the
-- stations within radius_km (0.1 to 500, default 25) of the point,
-- nearest first, at most `limit` (1 to 100, default 20).  With product
-- only the stations that sell it, with today's price (the newest price
-- in force on today's Moscow date).  Distances are great-circle
-- (haversine) in whole metres.
CREATE FUNCTION fc_route_mobile_stations(req jsonb) RETURNS jsonb
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
               'lat', st.lat, 'lon', st.lon,
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

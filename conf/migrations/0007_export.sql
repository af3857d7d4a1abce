-- The transactions export for accounting systems (docs/export.md): API
-- keys of an organization, the log of their uses, the commit order of
-- transactions, and the functions nginx calls to check a key and to
-- read one page of transactions in chunks.
--
-- Routes (through fc_api): api_key_create, api_keys_list and
-- api_key_revoke for the cabinet's owner; export_transactions checks
-- the key and the query of GET /export/v1/transactions.  nginx then
-- calls fc_export_plan() and fc_export_rows() directly and writes the
-- rows as JSON or CSV itself.


-- ---------------------------------------------------------------------
-- The commit order of transactions
--
-- An incremental export must never lose a row and never repeat one.
-- Paging by "id greater than the last one seen" loses rows: ids are
-- taken from a sequence when a row is inserted, but the row becomes
-- visible only when its transaction commits, so id 101 may commit after
-- a reader has already moved past id 102.  Timestamps have the same
-- flaw.
--
-- Each row therefore records the id of the transaction that wrote it
-- (xid), and a reader takes the xmin of its snapshot as a horizon:
-- every transaction with a lower xid has ended, committed or rolled
-- back, and every transaction still running, or yet to start, has an
-- xid at or above it.  Returning only rows below the horizon, ordered
-- by (xid, id), makes the order final: no row can later appear behind
-- a cursor taken from such a page.  The price is latency: a long
-- transaction anywhere in the cluster holds the horizon back, and rows
-- committed after it wait for it to end.  They are delayed, never lost.
--
-- The existing rows get the xid of this migration, so they come first,
-- in id order.  Adding a column with a volatile default rewrites the
-- table under an exclusive lock: a short stop of the pumps' completions
-- while the migration runs.
-- ---------------------------------------------------------------------

ALTER TABLE transactions
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX transactions_xid_idx ON transactions (xid, id);


-- export_rate_limit: requests per minute of one API key unless the key
-- has its own; vat_rates: the dated VAT table, one entry a line, as
-- core/include/fc_vat.h reads it (the same lines as fcd.conf's vat).
INSERT INTO fc_meta (key, value) VALUES
    ('export_rate_limit', '60'),
    ('vat_rates', E'2019-01-01 20 20/120 vat120\n'
                  '2026-01-01 22 22/122 vat122')
ON CONFLICT (key) DO NOTHING;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- An organization's key for machine access.  The key itself is shown
-- once, when it is made; only its SHA-256 is kept.  prefix ("fck_" and
-- the key's first four characters) tells keys apart in a list.  An
-- empty allowed_networks admits any address.  rate_limit (requests per
-- minute) overrides fc_meta's export_rate_limit.
CREATE TABLE api_keys (
    id                  bigserial   PRIMARY KEY,
    org_id              bigint      NOT NULL REFERENCES organizations,
    name                text        NOT NULL
                                    CHECK (length(name) BETWEEN 1 AND 100),
    key_hash            text        NOT NULL UNIQUE,
    prefix              text        NOT NULL,
    scopes              text[]      NOT NULL
                                    CHECK (cardinality(scopes) > 0
                                           AND scopes <@ ARRAY[
                                               'transactions:read',
                                               'cards:read',
                                               'contracts:read']),
    allowed_networks    cidr[]      NOT NULL DEFAULT '{}',
    rate_limit          integer     CHECK (rate_limit > 0),
    created_by          bigint      NOT NULL REFERENCES users,
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    revoked_by          bigint      REFERENCES users
);

CREATE INDEX api_keys_org_idx ON api_keys (org_id, id);

-- Every use of a key that nginx could match to a key, with what the
-- check answered (200, or 401 for a revoked key, 403, 404, 422).  A
-- request refused later for its rate (429) is a use with status 200
-- here and a 429 in nginx's access log.
CREATE TABLE api_key_uses (
    id                  bigserial   PRIMARY KEY,
    key_id              bigint      NOT NULL REFERENCES api_keys,
    at                  timestamptz NOT NULL DEFAULT now(),
    route               text        NOT NULL,
    ip                  text,
    status              integer     NOT NULL
);

CREATE INDEX api_key_uses_key_idx ON api_key_uses (key_id, at);


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- Returns the API key object of the cabinet: never the key nor its
-- hash.  last_used_at comes from the log of uses.
CREATE FUNCTION fc_export_key_json(k api_keys) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', k.id,
        'name', k.name,
        'prefix', k.prefix,
        'scopes', to_jsonb(k.scopes),
        'allowed_networks',
            (SELECT coalesce(jsonb_agg(n::text ORDER BY i), '[]'::jsonb)
               FROM unnest(k.allowed_networks) WITH ORDINALITY AS a(n, i)),
        'rate_limit', coalesce(k.rate_limit,
                               fc_topup_meta_int('export_rate_limit', 60)),
        'created_at', k.created_at,
        'created_by', k.created_by,
        'last_used_at', (SELECT max(u.at) FROM api_key_uses u
                          WHERE u.key_id = k.id),
        'revoked_at', k.revoked_at)
$$;


-- Returns the scopes in body->'scopes': a non-empty array of distinct
-- known scopes; raises 422 naming the bad item otherwise.
CREATE FUNCTION fc_export_arg_scopes(body jsonb) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    known   text[] := ARRAY['transactions:read', 'cards:read',
                            'contracts:read'];
    v       jsonb := body -> 'scopes';
    item    jsonb;
    i       int := 0;
    scopes  text[] := '{}';
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'array'
       OR jsonb_array_length(v) = 0
    THEN
        PERFORM fc_cab_invalid(format(
            'scopes: must be a non-empty array of %s, got %s',
            array_to_string(known, ', '), fc_cab_quote(v)));
    END IF;

    FOR item IN SELECT e FROM jsonb_array_elements(v) AS e LOOP
        IF jsonb_typeof(item) <> 'string'
           OR NOT (item #>> '{}') = ANY (known)
        THEN
            PERFORM fc_cab_invalid(format(
                'scopes[%s]: must be one of %s, got %s', i,
                array_to_string(known, ', '), fc_cab_quote(item)));
        END IF;

        IF (item #>> '{}') = ANY (scopes) THEN
            PERFORM fc_cab_invalid(format(
                'scopes[%s]: %s is given twice', i, fc_cab_quote(item)));
        END IF;

        scopes := scopes || (item #>> '{}');
        i := i + 1;
    END LOOP;

    RETURN scopes;
END
$$;


-- Returns the networks in body->'allowed_networks' (absent or null: none,
-- which admits any address): at most 32 CIDR blocks such as
-- "10.0.0.0/8" or "2001:db8::/32"; a bare address is one host.  Raises
-- 422 quoting the item that is no network, or that has bits set right
-- of its mask ("10.0.0.1/8"), which is a typo more often than not.
CREATE FUNCTION fc_export_arg_networks(body jsonb) RETURNS cidr[]
LANGUAGE plpgsql AS $$
DECLARE
    v     jsonb := body -> 'allowed_networks';
    item  jsonb;
    i     int := 0;
    net   cidr;
    nets  cidr[] := '{}';
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN nets;
    END IF;

    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 32 THEN
        PERFORM fc_cab_invalid(format(
            'allowed_networks: must be an array of at most 32 networks, '
            'got %s', fc_cab_quote(v)));
    END IF;

    FOR item IN SELECT e FROM jsonb_array_elements(v) AS e LOOP
        net := NULL;

        IF jsonb_typeof(item) = 'string'
           AND (item #>> '{}') ~ '^[0-9A-Fa-f.:]{2,45}(/[0-9]{1,3})?$'
        THEN
            BEGIN
                net := (item #>> '{}')::cidr;
            EXCEPTION WHEN invalid_text_representation
                           OR invalid_parameter_value
            THEN
                net := NULL;
            END;
        END IF;

        IF net IS NULL THEN
            PERFORM fc_cab_invalid(format(
                'allowed_networks[%s]: must be a network such as '
                '"10.0.0.0/8" with no bits set right of the mask, got %s',
                i, fc_cab_quote(item)));
        END IF;

        nets := nets || net;
        i := i + 1;
    END LOOP;

    RETURN nets;
END
$$;


-- Returns whether the client address ip (text, as nginx saw it) lies in
-- one of nets; an empty nets admits any address, an address that does
-- not parse none.
CREATE FUNCTION fc_export_ip_allowed(ip text, nets cidr[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF cardinality(nets) = 0 THEN
        RETURN true;
    END IF;

    RETURN coalesce(ip::inet <<= ANY (nets), false);
EXCEPTION WHEN invalid_text_representation OR null_value_not_allowed THEN
    RETURN false;
END
$$;


-- Returns the opaque cursor of a position (xid, id) of the export, with
-- the lower bound since of the first call when there was one: base64url
-- without padding of "<xid>.<id>[.<since as unix seconds>]".
CREATE FUNCTION fc_export_cursor(xid xid8, id bigint, since timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(
               xid::text || '.' || id::text
               || coalesce('.' || extract(epoch FROM since)::bigint::text,
                           ''),
               'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;


-- Decodes a cursor of fc_export_cursor() into its position and since;
-- raises 422 for anything the export never gave out.
CREATE FUNCTION fc_export_cursor_parse(cursor text, OUT xid xid8,
                                       OUT id bigint,
                                       OUT since timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    t  text;
BEGIN
    BEGIN
        IF cursor ~ '^[A-Za-z0-9_-]{4,80}$' THEN
            t := convert_from(decode(
                     rpad(translate(cursor, '-_', '+/'),
                          (length(cursor) + 3) / 4 * 4, '='),
                     'base64'), 'UTF8');
        END IF;
    EXCEPTION WHEN OTHERS THEN
        t := NULL;
    END;

    IF t !~ '^[0-9]{1,19}\.[0-9]{1,19}(\.-?[0-9]{1,12})?$' THEN
        t := NULL;
    ELSIF split_part(t, '.', 1)::numeric > 9223372036854775807
          OR split_part(t, '.', 2)::numeric > 9223372036854775807
    THEN
        t := NULL;
    END IF;

    IF t IS NULL THEN
        PERFORM fc_cab_invalid(format(
            'cursor: not a cursor of this export, got %s',
            fc_cab_quote(to_jsonb(left(cursor, 100)))));
    END IF;

    xid := split_part(t, '.', 1)::xid8;
    id := split_part(t, '.', 2)::bigint;
    since := CASE WHEN split_part(t, '.', 3) <> ''
                  THEN to_timestamp(split_part(t, '.', 3)::bigint) END;
END
$$;


-- Returns the transactions an export scope covers, in no order: the
-- rows of the organization's contracts, within the first call's since
-- and the query's from/to, contract and card.  scope is what
-- fc_route_export_transactions() answers as "scope"; timestamps are
-- instants, the dates already turned into local midnights.  A plain
-- SQL function, so that the planner inlines it and walks
-- transactions_xid_idx in (xid, id) order.
CREATE FUNCTION fc_export_scope(scope jsonb) RETURNS SETOF transactions
LANGUAGE sql STABLE AS $$
    SELECT t.*
      FROM transactions t
      JOIN contracts k ON k.id = t.contract_id
     WHERE k.org_id = (scope ->> 'org_id')::bigint
       AND (scope ->> 'since' IS NULL
            OR t.created_at >= (scope ->> 'since')::timestamptz)
       AND (scope ->> 'from' IS NULL
            OR t.created_at >= (scope ->> 'from')::timestamptz)
       AND (scope ->> 'to' IS NULL
            OR t.created_at < (scope ->> 'to')::timestamptz)
       AND (scope ->> 'contract_id' IS NULL
            OR t.contract_id = (scope ->> 'contract_id')::bigint)
       AND (scope ->> 'card_id' IS NULL
            OR t.card_id = (scope ->> 'card_id')::bigint)
$$;


-- ---------------------------------------------------------------------
-- Cabinet routes: the organization's API keys (owner only)
-- ---------------------------------------------------------------------

-- POST /api/v1/api-keys {"name", "scopes", "allowed_networks"?}: 201
-- with the key object and, this once, the key itself: "fck_" and 40
-- hex digits (160 random bits).
CREATE FUNCTION fc_route_api_key_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    body    jsonb := fc_cab_body(req);
    name_   text;
    scopes  text[];
    nets    cidr[];
    secret  text;
    k       api_keys;
BEGIN
    PERFORM fc_require_role(u, 'owner');
    PERFORM fc_cab_known_fields(body, ARRAY['name', 'scopes',
                                            'allowed_networks']);

    name_ := btrim(fc_arg_text(body, 'name', 100));
    IF name_ = '' THEN
        PERFORM fc_cab_invalid('name: must not be blank');
    END IF;
    scopes := fc_export_arg_scopes(body);
    nets := fc_export_arg_networks(body);

    secret := 'fck_' || left(fc_cab_token(), 40);

    INSERT INTO api_keys (org_id, name, key_hash, prefix, scopes,
                          allowed_networks, created_by, created_at)
    VALUES (u.org_id, name_, fc_sha256_hex(secret), left(secret, 8),
            scopes, nets, u.id, fc_now(req))
    RETURNING * INTO k;

    PERFORM fc_audit(u, 'api_key_create', 'api_key', k.id::text, req,
                     jsonb_build_object('name', k.name,
                                        'scopes', to_jsonb(k.scopes),
                                        'allowed_networks',
                                        to_jsonb(k.allowed_networks::text[])));

    RETURN fc_ok(201, fc_export_key_json(k)
                      || jsonb_build_object('key', secret));
END
$$;


-- GET /api/v1/api-keys: the organization's keys, revoked ones too,
-- newest first; never a key or its hash.
CREATE FUNCTION fc_route_api_keys_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u      users := fc_session_user(req);
    items  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner');

    SELECT coalesce(jsonb_agg(fc_export_key_json(k) ORDER BY k.id DESC),
                    '[]'::jsonb)
      INTO items
      FROM api_keys k
     WHERE k.org_id = u.org_id;

    RETURN fc_ok(200, jsonb_build_object('items', items));
END
$$;


-- DELETE /api/v1/api-keys/{id}: revokes the key; the next request with
-- it gets 401, since every request looks the key up.  Revoking a
-- revoked key changes nothing and answers the same.
CREATE FUNCTION fc_route_api_key_revoke(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u    users := fc_session_user(req);
    id_  bigint := fc_path_id(req, 0);
    k    api_keys;
BEGIN
    PERFORM fc_require_role(u, 'owner');

    SELECT * INTO k
      FROM api_keys
     WHERE id = id_ AND org_id = u.org_id
       FOR UPDATE;

    IF NOT FOUND THEN
        PERFORM fc_raise(404, 'not_found', format('no API key %s', id_));
    END IF;

    IF k.revoked_at IS NULL THEN
        UPDATE api_keys
           SET revoked_at = fc_now(req), revoked_by = u.id
         WHERE id = k.id
        RETURNING * INTO k;

        PERFORM fc_audit(u, 'api_key_revoke', 'api_key', k.id::text, req,
                         jsonb_build_object('name', k.name));
    END IF;

    RETURN fc_ok(200, fc_export_key_json(k));
END
$$;


-- ---------------------------------------------------------------------
-- The export
-- ---------------------------------------------------------------------

-- GET /export/v1/transactions?format=&limit=&cursor=|since=&from=&to=
-- &contract_id=&card_id=: checks the API key (req->>'bearer', its
-- SHA-256) and the query, logs the use, and answers what nginx needs to
-- stream the page (not the page itself):
--
--   {"key_id", "format": "json"|"csv"|"csv1251", "limit",
--    "rate_limit": requests per minute, "vat_rates": fc_vat.h lines,
--    "after": {"xid", "id"}: where the page starts,
--    "scope": {"org_id", "tz", "since", "from", "to", "contract_id",
--              "card_id"}: what fc_export_plan() and fc_export_rows()
--              read}
--
-- 401 for a missing, unknown or revoked key (the same answer, so that
-- a revoked key is not told apart), 403 from an address outside the
-- key's networks or without the scope transactions:read, 422 for a bad
-- query, 404 for a contract or card of another organization.  Errors
-- are returned rather than raised, so that the use stays logged.
CREATE FUNCTION fc_route_export_transactions(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    q         jsonb := fc_cab_query(req);
    k         api_keys;
    tz        text;
    format_   text;
    size      bigint;
    after_xid xid8 := '0';
    after_id  bigint := 0;
    since     timestamptz;
    from_d    date;
    to_d      date;
    contract_ bigint;
    card_     bigint;
    status    int;
    answer    jsonb;
    st        text;
    msg       text;
    code      text;
BEGIN
    SELECT * INTO k FROM api_keys WHERE key_hash = req ->> 'bearer';

    IF NOT FOUND THEN
        RETURN fc_error(401, 'unauthorized',
                        'missing, unknown or revoked API key');
    END IF;

    IF k.revoked_at IS NOT NULL THEN
        answer := fc_error(401, 'unauthorized',
                           'missing, unknown or revoked API key');

    ELSIF NOT fc_export_ip_allowed(req ->> 'ip', k.allowed_networks) THEN
        answer := fc_error(403, 'forbidden',
                           'this API key may not be used from this '
                           'address');

    ELSIF NOT 'transactions:read' = ANY (k.scopes) THEN
        answer := fc_error(403, 'forbidden',
                           'this API key lacks the scope '
                           'transactions:read');
    END IF;

    IF answer IS NULL THEN
        BEGIN
            SELECT o.timezone INTO STRICT tz
              FROM organizations o WHERE o.id = k.org_id;

            PERFORM fc_cab_known_fields(q, ARRAY['format', 'limit',
                'cursor', 'since', 'from', 'to', 'contract_id',
                'card_id']);

            format_ := fc_cab_arg_enum(q, 'format',
                                       ARRAY['json', 'csv', 'csv1251'],
                                       false, 'json');
            size := coalesce(fc_arg_int(q, 'limit', 1, 10000, false), 1000);

            IF fc_cab_given(q, 'cursor') THEN
                IF fc_cab_given(q, 'since') THEN
                    PERFORM fc_cab_invalid(
                        'since: only for the first call; the cursor '
                        'already says where to continue');
                END IF;
                SELECT c.xid, c.id, c.since
                  INTO after_xid, after_id, since
                  FROM fc_export_cursor_parse(fc_arg_text(q, 'cursor',
                                                          200)) c;
            ELSE
                since := fc_arg_date(q, 'since', false)::timestamp
                         AT TIME ZONE tz;
                IF since IS NULL THEN
                    PERFORM fc_cab_invalid(
                        'since: is required without a cursor, a date '
                        'YYYY-MM-DD');
                END IF;
            END IF;

            from_d := fc_arg_date(q, 'from', false);
            to_d := fc_arg_date(q, 'to', false);
            IF from_d IS NOT NULL AND to_d IS NOT NULL AND to_d < from_d
            THEN
                PERFORM fc_cab_invalid(format(
                    'to: must not be before from (%s), got "%s"',
                    from_d, to_d));
            END IF;

            contract_ := fc_arg_int(q, 'contract_id', 1,
                                    9223372036854775807, false);
            IF contract_ IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM contracts c
                    WHERE c.id = contract_ AND c.org_id = k.org_id)
            THEN
                PERFORM fc_raise(404, 'not_found',
                                 format('no contract %s', contract_));
            END IF;

            card_ := fc_arg_int(q, 'card_id', 1, 9223372036854775807,
                                false);
            IF card_ IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM cards c
                     JOIN contracts k2 ON k2.id = c.contract_id
                    WHERE c.id = card_ AND k2.org_id = k.org_id)
            THEN
                PERFORM fc_raise(404, 'not_found',
                                 format('no card %s', card_));
            END IF;

        EXCEPTION WHEN SQLSTATE 'FC404' OR SQLSTATE 'FC422' THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE,
                                    msg = MESSAGE_TEXT,
                                    code = PG_EXCEPTION_HINT;
            answer := fc_error(substr(st, 3)::int, code, msg);
        END;
    END IF;

    status := coalesce((answer ->> 'status')::int, 200);

    INSERT INTO api_key_uses (key_id, at, route, ip, status)
    VALUES (k.id, fc_now(req), 'export_transactions', req ->> 'ip', status);

    IF answer IS NOT NULL THEN
        RETURN answer;
    END IF;

    RETURN fc_ok(200, jsonb_build_object(
        'key_id', k.id,
        'format', format_,
        'limit', size,
        'rate_limit', coalesce(k.rate_limit,
                               fc_topup_meta_int('export_rate_limit', 60)),
        'vat_rates', coalesce((SELECT m.value FROM fc_meta m
                                WHERE m.key = 'vat_rates'), ''),
        'after', jsonb_build_object('xid', after_xid::text,
                                    'id', after_id),
        'scope', jsonb_build_object(
            'org_id', k.org_id,
            'tz', tz,
            'since', since,
            'from', from_d::timestamp AT TIME ZONE tz,
            'to', (to_d + 1)::timestamp AT TIME ZONE tz,
            'contract_id', contract_,
            'card_id', card_)));
END
$$;


-- Returns the page that starts after (after_xid, after_id) and holds at
-- most size rows of scope: how many rows it has, its last position, and
-- the cursor of the next call.  Only rows below the horizon count (see
-- "The commit order of transactions" above), so the page's rows are
-- final and fc_export_rows() can fetch them in chunks later, each chunk
-- a query of its own.
--
-- has_more says that rows below the horizon follow the page; the cursor
-- is then the page's last position.  Otherwise every row of the scope
-- below the horizon has been seen, and the cursor moves up to the
-- horizon itself: the next call starts there, however many rows of
-- other organizations lie behind it.
CREATE FUNCTION fc_export_plan(scope jsonb, after_xid xid8, after_id bigint,
                               size int, OUT rows int, OUT last_xid xid8,
                               OUT last_id bigint, OUT has_more boolean,
                               OUT next_cursor text)
LANGUAGE plpgsql AS $$
DECLARE
    -- taken before the rows are read: the later snapshot of the query
    -- below sees every transaction under this horizon as ended
    horizon  xid8 := pg_snapshot_xmin(pg_current_snapshot());
    since    timestamptz := (scope ->> 'since')::timestamptz;
    r        record;
BEGIN
    rows := 0;
    last_xid := after_xid;
    last_id := after_id;
    has_more := false;

    FOR r IN SELECT t.xid, t.id
               FROM fc_export_scope(scope) t
              WHERE (t.xid, t.id) > (after_xid, after_id)
                AND t.xid < horizon
              ORDER BY t.xid, t.id
              LIMIT size + 1
    LOOP
        IF rows = size THEN
            has_more := true;
            EXIT;
        END IF;

        rows := rows + 1;
        last_xid := r.xid;
        last_id := r.id;
    END LOOP;

    IF has_more OR (horizon, 0::bigint) <= (after_xid, after_id) THEN
        next_cursor := fc_export_cursor(last_xid, last_id, since);
    ELSE
        next_cursor := fc_export_cursor(horizon, 0, since);
    END IF;
END
$$;


-- Returns up to n rows of scope after (after_xid, after_id) and up to
-- (last_xid, last_id), in (xid, id) order, as the export shows them:
-- the local time with its offset, the masked card, names rather than
-- codes.  nginx formats money, volume and VAT from the integers.
CREATE FUNCTION fc_export_rows(scope jsonb, after_xid xid8, after_id bigint,
                               last_xid xid8, last_id bigint, n int)
RETURNS TABLE (xid text, id bigint, at text, operation text,
               contract_id bigint, contract text, card_id bigint,
               card text, driver text, vehicle_plate text,
               station_id bigint, station text, station_address text,
               product_code text, product text, volume_ml bigint,
               unit_price bigint, amount bigint)
LANGUAGE sql STABLE AS $$
    SELECT t.xid::text, t.id, fc_cab_time(t.created_at, scope ->> 'tz'),
           t.kind, t.contract_id, k.number, t.card_id, c.pan_masked,
           c.driver_name, c.vehicle_plate, t.station_id, s.name,
           s.address, t.product_code, p.name, t.volume_ml, t.unit_price,
           t.amount
      FROM (SELECT e.*
              FROM fc_export_scope(scope) e
             WHERE (e.xid, e.id) > (after_xid, after_id)
               AND (e.xid, e.id) <= (last_xid, last_id)
             ORDER BY e.xid, e.id
             LIMIT n) t
      JOIN contracts k ON k.id = t.contract_id
      JOIN cards c ON c.id = t.card_id
      JOIN stations s ON s.id = t.station_id
      JOIN products p ON p.code = t.product_code
     ORDER BY t.xid, t.id
$$;

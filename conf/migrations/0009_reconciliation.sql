-- Reconciliation of the acquiring bank's daily registry
-- (docs/reconciliation.md): the business-day calendar, the bank
-- profiles that say how a registry file reads, the registries and their
-- lines, the import that the back office route and the fcreg tool both
-- call, the matching of each line to our payments, the report of what
-- needs a person, and the gauge of overdue registries in /metrics.
--
-- Nothing of 0001-0008 changes but fc_metrics_text(), which is replaced
-- with the same lines plus fc_registry_missing, and two indexes on
-- payments for the matching.


-- ---------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------

-- registry_deadline_hour: the Moscow hour of its expected day after
-- which a registry that has not come is overdue (0 .. 23);
-- registry_region: the calendar region whose business days the bank
-- keeps; registry_lookback_days: how far back the overdue gauge looks.
INSERT INTO fc_meta (key, value) VALUES
    ('registry_deadline_hour', '12'),
    ('registry_region',        'RU'),
    ('registry_lookback_days', '92')
ON CONFLICT (key) DO NOTHING;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- The production calendar: only the days that differ from the plain
-- five-day week.  holiday: a weekday off; workday: a Saturday or Sunday
-- made a working day (a moved day); short: a working day one hour
-- shorter (a working day all the same).  A region "CC-XXX" (RU-TA,
-- Tatarstan) inherits the rows of its country "CC" and overrides them
-- with its own.
CREATE TABLE business_calendar (
    region      text        NOT NULL
                            CHECK (region ~ '^[A-Z]{2}(-[A-Z0-9]{1,3})?$'),
    day         date        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('holiday', 'workday',
                                                     'short')),
    note        text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  bigint      REFERENCES users,
    PRIMARY KEY (region, day)
);

-- How one bank's registry file reads.  columns maps each field we use
-- to the header names it may have in the file (compared without case
-- and surrounding blanks); op_at, op_type and amount are required, and
-- one of bank_payment_id, order_id and rrn.  encoding: 'auto' (UTF-8 if
-- the bytes are valid UTF-8, else cp1251), 'utf-8' or 'cp1251'.
-- summary_labels maps the lowercase start of a summary line's first
-- field to what the line totals: 'all' (count, amount, fee, payout),
-- 'payments' or 'refunds'.  fee_bp is the bank's tariff in hundredths
-- of a percent of a payment (200 = 2.00 %), rounded half up.  Times in
-- the file without an offset are in timezone.
CREATE TABLE registry_profiles (
    bank                text        PRIMARY KEY
                                    CHECK (bank ~ '^[a-z0-9_]{1,32}$'),
    name                text        NOT NULL,
    encoding            text        NOT NULL DEFAULT 'auto'
                                    CHECK (encoding IN ('auto', 'utf-8',
                                                        'cp1251')),
    delimiter           text        NOT NULL DEFAULT ';'
                                    CHECK (length(delimiter) = 1
                                           AND delimiter <> '"'),
    columns             jsonb       NOT NULL,
    summary_labels      jsonb       NOT NULL DEFAULT '{}',
    summary_required    boolean     NOT NULL DEFAULT true,
    fee_bp              integer     CHECK (fee_bp BETWEEN 0 AND 10000),
    match_window_days   integer     NOT NULL DEFAULT 3
                                    CHECK (match_window_days BETWEEN 0
                                                                 AND 31),
    timezone            text        NOT NULL DEFAULT 'Europe/Moscow'
);

-- The bank's operation types: sign +1 adds to the payout, -1 takes
-- from it, 0 counts only the fee.  kind groups them: payment, refund
-- (refunds and their cancellations), chargeback (chargebacks,
-- representments and their reversals), fee (a fee without an amount).
CREATE TABLE registry_op_types (
    bank        text        NOT NULL REFERENCES registry_profiles,
    code        text        NOT NULL,
    sign        smallint    NOT NULL CHECK (sign IN (-1, 0, 1)),
    kind        text        NOT NULL CHECK (kind IN ('payment', 'refund',
                                                     'chargeback', 'fee')),
    PRIMARY KEY (bank, code)
);

-- One row per imported file, kept with its bytes.  registry_date is the
-- Moscow day of its operations.  status: reconciled (its lines are
-- matched; at most one per bank and day), conflict (another file of
-- that day was reconciled first: kept and shown, never merged), or
-- superseded (an operator replaced it by a later file).  bad_lines:
-- [{"line", "reason"}]; summary: the checks of its summary lines.
CREATE TABLE registries (
    id              bigserial   PRIMARY KEY,
    bank            text        NOT NULL REFERENCES registry_profiles,
    filename        text        NOT NULL,
    sha256          text        NOT NULL UNIQUE,
    size            bigint      NOT NULL,
    encoding        text        NOT NULL,
    content         bytea       NOT NULL,
    registry_date   date,
    status          text        NOT NULL
                                CHECK (status IN ('reconciled', 'conflict',
                                                  'superseded')),
    conflict_with   bigint      REFERENCES registries,
    superseded_by   bigint      REFERENCES registries,
    header_line     integer     NOT NULL,
    rows_read       integer     NOT NULL DEFAULT 0,
    bad_lines       jsonb       NOT NULL DEFAULT '[]',
    summary         jsonb       NOT NULL DEFAULT '[]',
    summary_found   boolean     NOT NULL DEFAULT false,
    summary_ok      boolean,
    source          text        NOT NULL CHECK (source IN ('api', 'fcreg')),
    imported_by     bigint      REFERENCES users,
    imported_at     timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX registries_day_idx ON registries (bank, registry_date)
    WHERE status = 'reconciled';
CREATE INDEX registries_date_idx ON registries (registry_date, id);

-- One row per operation line that could be read.  amount and payout
-- are unsigned kopecks (sign says which way they go), fee is what the
-- bank kept (NULL when the file has no fee column).  class is what
-- matching found (NULL in a registry that is not reconciled):
-- matched, fee_mismatch, amount_mismatch, unconfirmed, unknown,
-- duplicate, refund, chargeback, fee.  extra keeps the file's columns
-- we do not map (the payer's name, say), full card numbers masked.
CREATE TABLE registry_lines (
    id              bigserial   PRIMARY KEY,
    registry_id     bigint      NOT NULL REFERENCES registries,
    line_no         integer     NOT NULL,
    op_at           timestamptz NOT NULL,
    op_date         date        NOT NULL,
    op_type         text        NOT NULL,
    sign            smallint    NOT NULL,
    kind            text        NOT NULL,
    bank_payment_id text,
    order_id        text,
    rrn             text,
    approval_code   text,
    pan             text,
    terminal        text,
    amount          bigint      NOT NULL CHECK (amount >= 0),
    fee             bigint,
    payout          bigint,
    extra           jsonb       NOT NULL DEFAULT '{}',
    payment_id      bigint      REFERENCES payments,
    matched_by      text        CHECK (matched_by IN ('bank_payment_id',
                                                      'rrn', 'order_id')),
    class           text        CHECK (class IN ('matched', 'fee_mismatch',
                                'amount_mismatch', 'unconfirmed',
                                'unknown', 'duplicate', 'refund',
                                'chargeback', 'fee')),
    expected_fee    bigint,
    detail          text,
    UNIQUE (registry_id, line_no)
);

CREATE INDEX registry_lines_payment_idx ON registry_lines (payment_id)
    WHERE payment_id IS NOT NULL;

-- A payment the bank's registry confirmed: its line matched in amount
-- (the fee may still be disputed).  One row per payment, so a second
-- line of the same payment can only be a duplicate.
CREATE TABLE payment_reconciliations (
    payment_id      bigint      PRIMARY KEY REFERENCES payments,
    registry_id     bigint      NOT NULL REFERENCES registries,
    line_id         bigint      NOT NULL REFERENCES registry_lines,
    reconciled_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_reconciliations_registry_idx
    ON payment_reconciliations (registry_id);

-- the second and third keys of matching, and the payments of a day
CREATE INDEX payments_rrn_idx ON payments (rrn, approval_code)
    WHERE rrn IS NOT NULL;
CREATE INDEX payments_confirmed_idx ON payments (confirmed_at)
    WHERE confirmed_at IS NOT NULL;


-- ---------------------------------------------------------------------
-- Data: T-Bank's layout (the sandbox bank's) and Russia's 2026 calendar
-- ---------------------------------------------------------------------

INSERT INTO registry_profiles (bank, name, encoding, columns,
                               summary_labels, fee_bp)
VALUES ('tbank', 'T-Bank internet acquiring', 'auto',
        '{"op_at":           ["Дата операции"],
          "op_type":         ["Тип операции"],
          "bank_payment_id": ["PaymentId"],
          "order_id":        ["OrderId"],
          "rrn":             ["RRN"],
          "approval_code":   ["Код авторизации"],
          "pan":             ["Карта"],
          "terminal":        ["Терминал"],
          "amount":          ["Сумма"],
          "fee":             ["Комиссия"],
          "payout":          ["К перечислению"]}',
        '{"итого": "all",
          "всего": "all",
          "сумма принятых платежей": "payments",
          "сумма возвратов": "refunds"}',
        200);

INSERT INTO registry_op_types (bank, code, sign, kind) VALUES
    ('tbank', 'Debit',                   1, 'payment'),
    ('tbank', 'Credit',                 -1, 'refund'),
    ('tbank', 'CancelRefund',            1, 'refund'),
    ('tbank', 'Chargeback',             -1, 'chargeback'),
    ('tbank', '2Chargeback',            -1, 'chargeback'),
    ('tbank', 'Chargeback_Reversal',     1, 'chargeback'),
    ('tbank', '2Chargeback_Reversal',    1, 'chargeback'),
    ('tbank', 'Representment',           1, 'chargeback'),
    ('tbank', 'Representment_Reversal', -1, 'chargeback'),
    ('tbank', 'AUTH_FAIL',               0, 'fee');

-- Government Decree No. 1466 of 24 September 2025: the weekdays off
-- and the shortened days before holidays; 247 working days.
INSERT INTO business_calendar (region, day, kind, note) VALUES
    ('RU', '2026-01-01', 'holiday', 'New Year holidays'),
    ('RU', '2026-01-02', 'holiday', 'New Year holidays'),
    ('RU', '2026-01-05', 'holiday', 'New Year holidays'),
    ('RU', '2026-01-06', 'holiday', 'New Year holidays'),
    ('RU', '2026-01-07', 'holiday', 'Christmas'),
    ('RU', '2026-01-08', 'holiday', 'New Year holidays'),
    ('RU', '2026-01-09', 'holiday', 'moved from Saturday 3 January'),
    ('RU', '2026-02-23', 'holiday', 'Defender of the Fatherland Day'),
    ('RU', '2026-03-09', 'holiday', 'for 8 March, a Sunday'),
    ('RU', '2026-04-30', 'short',   'before 1 May'),
    ('RU', '2026-05-01', 'holiday', 'Spring and Labour Day'),
    ('RU', '2026-05-08', 'short',   'before 9 May'),
    ('RU', '2026-05-11', 'holiday', 'for 9 May, a Saturday'),
    ('RU', '2026-06-11', 'short',   'before 12 June'),
    ('RU', '2026-06-12', 'holiday', 'Russia Day'),
    ('RU', '2026-11-03', 'short',   'before 4 November'),
    ('RU', '2026-11-04', 'holiday', 'Unity Day'),
    ('RU', '2026-12-31', 'holiday', 'moved from Sunday 4 January');


-- ---------------------------------------------------------------------
-- Business days
-- ---------------------------------------------------------------------

-- Returns the time zone of registry days and of our payments' days.
CREATE FUNCTION fc_recon_tz() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'Europe/Moscow'::text
$$;


-- Returns the calendar region the bank keeps (fc_meta registry_region).
CREATE FUNCTION fc_recon_region() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT m.value FROM fc_meta m
                      WHERE m.key = 'registry_region'
                        AND m.value ~ '^[A-Z]{2}(-[A-Z0-9]{1,3})?$'),
                    'RU')
$$;


-- Returns the calendar row that decides day in region: the region's
-- own, else its country's; NULL when the day is an ordinary one.
CREATE FUNCTION fc_calendar_row(day date, region text)
    RETURNS business_calendar
LANGUAGE sql STABLE AS $$
    SELECT c.*
      FROM business_calendar c
     WHERE c.day = fc_calendar_row.day
       AND c.region IN (fc_calendar_row.region,
                        split_part(fc_calendar_row.region, '-', 1))
     ORDER BY c.region = fc_calendar_row.region DESC
     LIMIT 1
$$;


-- Returns whether day is a working day in region: what the calendar
-- says of it, else Monday to Friday.
CREATE FUNCTION fc_business_day(day date, region text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT c.kind <> 'holiday'
                       FROM fc_calendar_row(day, region) c
                      WHERE c.region IS NOT NULL),
                    extract(isodow FROM day) < 6)
$$;


-- Returns the first working day of region after day.  A year without
-- one is a broken calendar: FC422 then.
CREATE FUNCTION fc_business_day_next(day date, region text) RETURNS date
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d  date := day;
BEGIN
    FOR i IN 1 .. 366 LOOP
        d := d + 1;
        IF fc_business_day(d, region) THEN
            RETURN d;
        END IF;
    END LOOP;

    PERFORM fc_raise(422, 'validation_failed', format(
        'calendar %s has no working day in the year after %s',
        region, day));
    RETURN NULL;
END
$$;


-- Returns the day the bank's registry of payment_date's operations is
-- expected: the next working day after it.
CREATE FUNCTION fc_registry_expected_date(payment_date date, region text)
    RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT fc_business_day_next(payment_date, region)
$$;


-- Returns the moment the registry of payment_date is overdue: the
-- deadline hour (Moscow) of its expected day.
CREATE FUNCTION fc_registry_deadline(payment_date date) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT (fc_registry_expected_date(payment_date, fc_recon_region())
            + make_interval(hours => least(fc_topup_meta_int(
                  'registry_deadline_hour', 12), 23)::int))
           AT TIME ZONE fc_recon_tz()
$$;


-- ---------------------------------------------------------------------
-- Reading a registry file
--
-- The file's bytes are UTF-8 when PostgreSQL accepts them as such and
-- cp1251 otherwise (a profile may force one); cp1251 text decodes as
-- UTF-8 only by a freak, since two Cyrillic letters in a row are never
-- a valid UTF-8 sequence.  Lines end in CRLF, LF or CR.  The header is
-- the first of the first 30 lines that names the profile's required
-- columns; columns are found by name, so their order and any columns we
-- do not know do not matter.  After the header every non-blank line is
-- a summary line (its first field starts with a label of the profile),
-- an operation, or a bad line reported with its number and reason.
--
-- Fields are split on the delimiter; a field may be quoted as Excel
-- does ("a;b", "say ""hi"""), but may not span lines.  Amounts are
-- roubles with '.' or ',' and at most two decimals, optionally grouped
-- by thousands with spaces or no-break spaces, and become kopecks
-- without ever passing through a float.
-- ---------------------------------------------------------------------

-- Returns t without surrounding spaces, tabs and no-break spaces.
CREATE FUNCTION fc_recon_trim(t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT btrim(t, E' \t\u00a0\u202f')
$$;


-- Returns field p (1-based; 0 means the column is absent) of f trimmed,
-- NULL when absent or empty.
CREATE FUNCTION fc_recon_field(f text[], p int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p > 0 THEN nullif(fc_recon_trim(f[p]), '') END
$$;


-- Returns a value quoted for a message about a bad line, cut to 40
-- characters.
CREATE FUNCTION fc_recon_quote(t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '"' || CASE WHEN length(t) > 40 THEN left(t, 37) || '...'
                       ELSE coalesce(t, '') END || '"'
$$;


-- Returns kopecks as roubles for people: "1234.56", "-0.05"; sep is the
-- decimal separator ('.' or ',').
CREATE FUNCTION fc_recon_money(v bigint, sep text DEFAULT '.') RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN NULL
                ELSE CASE WHEN v < 0 THEN '-' ELSE '' END
                     || (abs(v) / 100)::text || sep
                     || lpad((abs(v) % 100)::text, 2, '0') END
$$;


-- Returns the amount of roubles in t as kopecks, NULL when t is not
-- one: an optional '-', at most 12 digits of roubles (grouped by three
-- with spaces or no-break spaces, or not at all), then optionally '.'
-- or ',' and one or two digits.  "1234.56", "1 234,56" and "1234" are
-- amounts; "1,234.56", "12 34" and "1.234" are not.
CREATE FUNCTION fc_recon_kopecks(t text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s  text := fc_recon_trim(t);
    m  text[];
BEGIN
    -- the usual case, quickly
    IF s ~ '^[0-9]{1,12}[.,][0-9]{2}$' THEN
        RETURN translate(s, '.,', '')::bigint;
    END IF;

    IF s ~ E'[ \u00a0\u202f\u2009]' THEN
        IF s !~ (E'^-?[0-9]{1,3}([ \u00a0\u202f\u2009][0-9]{3})+'
                 '([.,][0-9]{1,2})?$')
        THEN
            RETURN NULL;
        END IF;

        s := regexp_replace(s, E'[ \u00a0\u202f\u2009]', '', 'g');
    END IF;

    m := regexp_match(s, '^(-?)([0-9]{1,12})(?:[.,]([0-9]{1,2}))?$');
    IF m IS NULL THEN
        RETURN NULL;
    END IF;

    RETURN CASE WHEN m[1] = '-' THEN -1 ELSE 1 END
           * (m[2]::bigint * 100 + coalesce(rpad(m[3], 2, '0')::bigint, 0));
END
$$;


-- Returns the date and time in t, NULL when t is not one: "30.04.2026
-- 12:34:56", "30.04.2026 12:34", "30.04.2026", or ISO 8601
-- "2026-04-30 12:34:56", "2026-04-30T12:34:56+03:00", "2026-04-30".  A
-- time without an offset is in tz; years 2000 to 2099 only.
CREATE FUNCTION fc_recon_time(t text, tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s    text := fc_recon_trim(t);
    m    text[];
    y    int;
    mo   int;
    d    int;
    h    int := 0;
    mi   int := 0;
    sec  int := 0;
    off  interval;
    ts   timestamp;
BEGIN
    m := regexp_match(s, '^([0-9]{2})\.([0-9]{2})\.([0-9]{4})'
                         '(?:[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?$');
    IF m IS NOT NULL THEN
        d := m[1]::int;
        mo := m[2]::int;
        y := m[3]::int;
    ELSE
        m := regexp_match(s, '^([0-9]{4})-([0-9]{2})-([0-9]{2})'
                             '(?:[ T]([0-9]{2}):([0-9]{2})'
                             '(?::([0-9]{2})(?:\.[0-9]{1,6})?)?'
                             '(Z|[+-][0-9]{2}:?[0-9]{2})?)?$');
        IF m IS NULL THEN
            RETURN NULL;
        END IF;

        y := m[1]::int;
        mo := m[2]::int;
        d := m[3]::int;
    END IF;

    h := coalesce(m[4]::int, 0);
    mi := coalesce(m[5]::int, 0);
    sec := coalesce(m[6]::int, 0);

    IF y NOT BETWEEN 2000 AND 2099 OR mo NOT BETWEEN 1 AND 12 OR d < 1
       OR d > extract(day FROM make_date(y, mo, 1) + interval '1 month'
                               - interval '1 day')
       OR h > 23 OR mi > 59 OR sec > 59
    THEN
        RETURN NULL;
    END IF;

    ts := make_timestamp(y, mo, d, h, mi, sec);

    IF m[7] IS NULL THEN
        RETURN ts AT TIME ZONE tz;
    END IF;

    IF m[7] = 'Z' THEN
        off := interval '0';
    ELSE
        off := make_interval(hours => substr(m[7], 2, 2)::int,
                             mins => right(m[7], 2)::int);
        IF left(m[7], 1) = '-' THEN
            off := -off;
        END IF;
    END IF;

    RETURN (ts - off) AT TIME ZONE 'UTC';
END
$$;


-- Returns the fields of one line split on delim, with Excel's quoting
-- undone; NULL when a quote is left open.  A quote inside an unquoted
-- field is kept as it is.
CREATE FUNCTION fc_recon_split(line text, delim text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    fields  text[] := '{}';
    cur     text := '';
    c       text;
    i       int := 1;
    n       int := length(line);
    quoted  boolean := false;
BEGIN
    IF strpos(line, '"') = 0 THEN
        RETURN string_to_array(line, delim);
    END IF;

    WHILE i <= n LOOP
        c := substr(line, i, 1);

        IF quoted THEN
            IF c <> '"' THEN
                cur := cur || c;
            ELSIF substr(line, i + 1, 1) = '"' THEN
                cur := cur || '"';
                i := i + 1;
            ELSE
                quoted := false;
            END IF;

        ELSIF c = '"' AND fc_recon_trim(cur) = '' THEN
            quoted := true;
            cur := '';

        ELSIF c = delim THEN
            fields := fields || cur;
            cur := '';

        ELSE
            cur := cur || c;
        END IF;

        i := i + 1;
    END LOOP;

    IF quoted THEN
        RETURN NULL;
    END IF;

    RETURN fields || cur;
END
$$;


-- Returns the text of a registry file and the encoding it was read in
-- ('utf-8' or 'cp1251'), its UTF-8 byte order mark dropped.  FC422 when
-- the bytes are neither (or not the encoding the profile forces).
CREATE FUNCTION fc_recon_decode(bytes bytea, forced text,
                                OUT txt text, OUT encoding text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF substr(bytes, 1, 3) = '\xefbbbf'::bytea THEN
        bytes := substr(bytes, 4);
        IF forced = 'auto' THEN
            forced := 'utf-8';
        END IF;
    END IF;

    IF forced IN ('auto', 'utf-8') THEN
        BEGIN
            txt := convert_from(bytes, 'UTF8');
            encoding := 'utf-8';
            RETURN;
        EXCEPTION WHEN character_not_in_repertoire
                       OR untranslatable_character
        THEN
            IF forced = 'utf-8' THEN
                PERFORM fc_raise(422, 'validation_failed',
                    'body: the file is not valid UTF-8, which the bank''s '
                    'profile requires');
            END IF;
        END;
    END IF;

    BEGIN
        txt := convert_from(bytes, 'WIN1251');
        encoding := 'cp1251';
    EXCEPTION WHEN character_not_in_repertoire
                   OR untranslatable_character
    THEN
        PERFORM fc_raise(422, 'validation_failed',
            'body: the file is neither UTF-8 nor cp1251 text (a NUL byte '
            'or a byte cp1251 does not define); is it a spreadsheet '
            'rather than CSV?');
    END;
END
$$;


-- Returns the names of the fields a profile maps, in the order of the
-- positions fc_recon_header() returns.
CREATE FUNCTION fc_recon_fields() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['op_at', 'op_type', 'bank_payment_id', 'order_id', 'rrn',
                 'approval_code', 'pan', 'terminal', 'amount', 'fee',
                 'payout']
$$;


-- Returns the positions of the fields in a header line f, in the order
-- of fc_recon_fields() (0: the file has no such column), or NULL when f
-- is not the header of the profile's columns: op_at, op_type and amount
-- are required, and one of bank_payment_id, order_id and rrn.
CREATE FUNCTION fc_recon_header(f text[], columns jsonb) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    names  text[] := fc_recon_fields();
    pos    int[] := array_fill(0, ARRAY[11]);
    wanted jsonb;
BEGIN
    IF f IS NULL THEN
        RETURN NULL;
    END IF;

    FOR i IN 1 .. 11 LOOP
        wanted := columns -> names[i];
        IF jsonb_typeof(wanted) = 'string' THEN
            wanted := jsonb_build_array(wanted);
        END IF;

        FOR j IN 1 .. coalesce(array_length(f, 1), 0) LOOP
            IF EXISTS (SELECT 1 FROM jsonb_array_elements_text(wanted) w
                        WHERE lower(fc_recon_trim(w)) =
                              lower(fc_recon_trim(f[j])))
            THEN
                pos[i] := j;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;

    IF pos[1] = 0 OR pos[2] = 0 OR pos[9] = 0
       OR (pos[3] = 0 AND pos[4] = 0 AND pos[5] = 0)
    THEN
        RETURN NULL;
    END IF;

    RETURN pos;
END
$$;


-- Returns the summary label (a key of labels) that the first field of a
-- line starts with, NULL for any other line.
CREATE FUNCTION fc_recon_summary_label(first text, labels jsonb)
    RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT l.key
      FROM jsonb_object_keys(labels) l(key)
     WHERE lower(fc_recon_trim(first)) LIKE lower(l.key) || '%'
     ORDER BY length(l.key) DESC
     LIMIT 1
$$;


-- Reads one operation line: its fields f, the positions pos of the
-- header's columns, the header's names, the operation types ops
-- ({lowercase code: {code, sign, kind}}) and the time zone of the
-- file's times.  Returns the line's values, or err saying why it cannot
-- be used (naming the file's column and quoting the value, never the
-- card column).
CREATE FUNCTION fc_recon_row(f text[], pos int[], headers text[], ops jsonb,
                             tz text,
                             OUT err text, OUT op_at timestamptz,
                             OUT op_type text, OUT sign int, OUT kind text,
                             OUT bank_payment_id text, OUT order_id text,
                             OUT rrn text, OUT approval_code text,
                             OUT pan text, OUT terminal text,
                             OUT amount bigint, OUT fee bigint,
                             OUT payout bigint, OUT extra jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n      int := coalesce(array_length(f, 1), 0);
    want   int := array_length(headers, 1);
    v      text;
    op     jsonb;
BEGIN
    IF f IS NULL THEN
        err := 'a double quote is left open';
        RETURN;
    END IF;

    IF n < want THEN
        err := format('has %s fields, the header has %s: the line may be '
                      'cut off', n, want);
        RETURN;
    END IF;

    IF n > want AND fc_recon_trim(array_to_string(f[want + 1 : n], ''))
                    <> ''
    THEN
        err := format('has %s fields, the header has %s: a delimiter in '
                      'an unquoted value?', n, want);
        RETURN;
    END IF;

    v := fc_recon_field(f, pos[2]);
    op := ops -> lower(v);
    IF op IS NULL THEN
        err := format('%s: unknown operation type %s', headers[pos[2]],
                      fc_recon_quote(v));
        RETURN;
    END IF;

    op_type := op ->> 'code';
    sign := (op ->> 'sign')::int;
    kind := op ->> 'kind';

    v := fc_recon_field(f, pos[1]);
    op_at := fc_recon_time(v, tz);
    IF op_at IS NULL THEN
        err := format('%s: not a date and time like 30.04.2026 12:34:56, '
                      'got %s', headers[pos[1]], fc_recon_quote(v));
        RETURN;
    END IF;

    v := fc_recon_field(f, pos[9]);
    amount := fc_recon_kopecks(v);
    IF amount IS NULL THEN
        err := format('%s: not an amount of roubles like 1234,56, got %s',
                      headers[pos[9]], fc_recon_quote(v));
        RETURN;
    END IF;

    -- some banks write outgoing amounts with a minus: the type says it
    IF amount < 0 THEN
        IF sign > 0 THEN
            err := format('%s: negative for an operation of type %s, got %s',
                          headers[pos[9]], op_type, fc_recon_quote(v));
            RETURN;
        END IF;
        amount := -amount;
    END IF;

    IF pos[10] > 0 THEN
        v := fc_recon_field(f, pos[10]);
        fee := fc_recon_kopecks(coalesce(v, '0'));
        IF fee IS NULL THEN
            err := format('%s: not an amount of roubles like 12,34, got %s',
                          headers[pos[10]], fc_recon_quote(v));
            RETURN;
        END IF;
    END IF;

    IF pos[11] > 0 THEN
        v := fc_recon_field(f, pos[11]);
        IF v IS NOT NULL THEN
            payout := fc_recon_kopecks(v);
            IF payout IS NULL THEN
                err := format('%s: not an amount of roubles like 1234,56, '
                              'got %s', headers[pos[11]], fc_recon_quote(v));
                RETURN;
            END IF;
            payout := abs(payout);
        END IF;
    END IF;

    bank_payment_id := fc_recon_field(f, pos[3]);
    order_id := fc_recon_field(f, pos[4]);
    rrn := fc_recon_field(f, pos[5]);
    approval_code := fc_recon_field(f, pos[6]);
    pan := fc_topup_mask_pan(fc_recon_field(f, pos[7]));
    terminal := fc_recon_field(f, pos[8]);

    IF bank_payment_id IS NULL AND order_id IS NULL AND rrn IS NULL THEN
        err := 'no payment id, order id or RRN: nothing to match it on';
        RETURN;
    END IF;

    IF length(bank_payment_id) > 64 OR length(order_id) > 64
       OR length(rrn) > 32 OR length(approval_code) > 16
       OR length(terminal) > 64
    THEN
        err := 'an id is too long (payment and order ids 64 characters, '
               'RRN 32, approval code 16, terminal 64)';
        RETURN;
    END IF;

    -- the named columns we do not map, with anything shaped like a full
    -- card number masked
    extra := '{}';
    FOR i IN 1 .. want LOOP
        IF i <> ALL (pos) AND headers[i] <> '' THEN
            v := fc_recon_field(f, i);
            IF v IS NOT NULL THEN
                extra := extra || jsonb_build_object(headers[i],
                                                     fc_topup_mask_pan(v));
            END IF;
        END IF;
    END LOOP;
END
$$;


-- Returns the header of a registry text: its line number, the positions
-- of the profile's fields (fc_recon_header) and the header's names.
-- FC422 when none of the first 30 lines is one.
CREATE FUNCTION fc_recon_find_header(txt text, prof registry_profiles,
                                     OUT line_no int, OUT pos int[],
                                     OUT headers text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rec  record;
    f    text[];
BEGIN
    -- the header is near the top: no need to split the whole file here
    FOR rec IN SELECT t.line, t.n
                 FROM regexp_split_to_table(left(txt, 65536),
                                            E'\r\n|\n|\r')
                      WITH ORDINALITY AS t(line, n)
                ORDER BY t.n
                LIMIT 30
    LOOP
        f := fc_recon_split(rec.line, prof.delimiter);
        pos := fc_recon_header(f, prof.columns);
        IF pos IS NOT NULL THEN
            line_no := rec.n;
            SELECT array_agg(fc_recon_trim(x) ORDER BY k)
              INTO headers
              FROM unnest(f) WITH ORDINALITY AS u(x, k);

            -- Excel ends rows with delimiters as it likes
            WHILE headers[cardinality(headers)] = '' LOOP
                headers := headers[1 : cardinality(headers) - 1];
            END LOOP;
            RETURN;
        END IF;
    END LOOP;

    PERFORM fc_raise(422, 'validation_failed', format(
        'body: no header row in the first 30 lines names the columns %s, '
        '%s and %s of the registry profile "%s" (a %s-separated file)',
        prof.columns -> 'op_at' ->> 0, prof.columns -> 'op_type' ->> 0,
        prof.columns -> 'amount' ->> 0, prof.bank, prof.delimiter));
END
$$;


-- Reads the lines after the header of registry r: the operations go
-- into registry_lines, the others are returned.  rows_read counts the
-- operation lines, good and bad; bad is [{"line", "reason"}]; summaries
-- is [{"line", "label", "fields"}] of the summary lines.
CREATE FUNCTION fc_recon_load(r registries, txt text, prof registry_profiles,
                              pos int[], headers text[],
                              OUT lines int, OUT rows_read int,
                              OUT bad jsonb, OUT summaries jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    ops  jsonb;
    tz   text := fc_recon_tz();
BEGIN
    SELECT jsonb_object_agg(lower(o.code),
                            jsonb_build_object('code', o.code,
                                               'sign', o.sign,
                                               'kind', o.kind))
      INTO ops
      FROM registry_op_types o
     WHERE o.bank = prof.bank;

    WITH src AS MATERIALIZED (
        SELECT t.n::int AS line_no,
               fc_recon_split(t.line, prof.delimiter) AS f
          FROM regexp_split_to_table(txt, E'\r\n|\n|\r')
               WITH ORDINALITY AS t(line, n)
         WHERE t.n > r.header_line
           AND btrim(t.line, E' \t\u00a0' || prof.delimiter) <> ''
    ), typed AS MATERIALIZED (
        SELECT s.line_no, s.f,
               fc_recon_summary_label(s.f[1], prof.summary_labels) AS label
          FROM src s
    ), parsed AS MATERIALIZED (
        SELECT t.line_no, x.*
          FROM typed t
         CROSS JOIN LATERAL fc_recon_row(t.f, pos, headers, ops,
                                         prof.timezone) x
         WHERE t.label IS NULL
    ), ins AS (
        INSERT INTO registry_lines (registry_id, line_no, op_at, op_date,
                                    op_type, sign, kind, bank_payment_id,
                                    order_id, rrn, approval_code, pan,
                                    terminal, amount, fee, payout, extra)
        SELECT r.id, p.line_no, p.op_at, (p.op_at AT TIME ZONE tz)::date,
               p.op_type, p.sign, p.kind, p.bank_payment_id, p.order_id,
               p.rrn, p.approval_code, p.pan, p.terminal, p.amount, p.fee,
               p.payout, p.extra
          FROM parsed p
         WHERE p.err IS NULL
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins),
           (SELECT count(*) FROM parsed),
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'line', p.line_no, 'reason', p.err)
                            ORDER BY p.line_no), '[]')
              FROM parsed p WHERE p.err IS NOT NULL),
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'line', t.line_no, 'label',
                                fc_recon_trim(t.f[1]), 'kind',
                                prof.summary_labels ->> t.label,
                                'fields', to_jsonb(t.f))
                            ORDER BY t.line_no), '[]')
              FROM typed t WHERE t.label IS NOT NULL)
      INTO lines, rows_read, bad, summaries;
END
$$;


-- Returns the checks of a registry's summary lines against its lines:
-- [{"line", "label", "what", "file", "computed", "ok"}].  A line
-- labelled 'all' is checked for the number of operation lines (the
-- first whole number after its label, outside the money columns) and
-- for the amount, fee and payout in the columns of those names; a
-- 'payments' or 'refunds' line for the amount in the amount column, or
-- else its last amount.  Sums are numeric: no total can overflow.
CREATE FUNCTION fc_recon_summary_checks(r registries, summaries jsonb,
                                        pos int[])
    RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s        jsonb;
    f        text[];
    kind     text;
    checks   jsonb := '[]';
    t        record;
    v        numeric;
    cnt      text;
BEGIN
    SELECT coalesce(sum(l.sign * l.amount), 0) AS amount,
           coalesce(sum(l.fee), 0) AS fee,
           coalesce(sum(l.amount) FILTER (WHERE l.kind = 'payment'), 0)
               AS payments,
           coalesce(sum(-l.sign * l.amount) FILTER (WHERE l.kind = 'refund'),
                    0) AS refunds
      INTO t
      FROM registry_lines l
     WHERE l.registry_id = r.id;

    FOR s IN SELECT e FROM jsonb_array_elements(summaries) e LOOP
        SELECT array_agg(x ORDER BY k) INTO f
          FROM jsonb_array_elements_text(s -> 'fields')
               WITH ORDINALITY AS u(x, k);
        kind := s ->> 'kind';

        IF kind = 'all' THEN
            SELECT fc_recon_trim(f[i]) INTO cnt
              FROM generate_subscripts(f, 1) i
             WHERE i > 1
               AND i NOT IN (pos[9], pos[10], pos[11])
               AND fc_recon_trim(f[i]) ~ '^[0-9]{1,9}$'
             ORDER BY i
             LIMIT 1;

            IF cnt IS NOT NULL THEN
                checks := checks || jsonb_build_object(
                    'line', s -> 'line', 'label', s -> 'label',
                    'what', 'lines', 'file', cnt::int,
                    'computed', r.rows_read, 'ok', cnt::int = r.rows_read);
            END IF;

            v := fc_recon_kopecks(fc_recon_field(f, pos[9]));
            IF v IS NOT NULL THEN
                checks := checks || jsonb_build_object(
                    'line', s -> 'line', 'label', s -> 'label',
                    'what', 'amount', 'file', v, 'computed', t.amount,
                    'ok', v = t.amount);
            END IF;

            v := fc_recon_kopecks(fc_recon_field(f, pos[10]));
            IF v IS NOT NULL THEN
                checks := checks || jsonb_build_object(
                    'line', s -> 'line', 'label', s -> 'label',
                    'what', 'fee', 'file', v, 'computed', t.fee,
                    'ok', v = t.fee);
            END IF;

            v := fc_recon_kopecks(fc_recon_field(f, pos[11]));
            IF v IS NOT NULL THEN
                checks := checks || jsonb_build_object(
                    'line', s -> 'line', 'label', s -> 'label',
                    'what', 'payout', 'file', v,
                    'computed', t.amount - t.fee,
                    'ok', v = t.amount - t.fee);
            END IF;

        ELSIF kind IN ('payments', 'refunds') THEN
            v := fc_recon_kopecks(fc_recon_field(f, pos[9]));
            IF v IS NULL THEN
                SELECT fc_recon_kopecks(f[i]) INTO v
                  FROM generate_subscripts(f, 1) i
                 WHERE i > 1 AND fc_recon_kopecks(f[i]) IS NOT NULL
                 ORDER BY i DESC
                 LIMIT 1;
            END IF;

            IF v IS NOT NULL THEN
                checks := checks || jsonb_build_object(
                    'line', s -> 'line', 'label', s -> 'label',
                    'what', kind, 'file', abs(v),
                    'computed', CASE kind WHEN 'payments' THEN t.payments
                                          ELSE t.refunds END,
                    'ok', abs(v) = CASE kind WHEN 'payments'
                                             THEN t.payments
                                             ELSE t.refunds END);
            END IF;
        END IF;
    END LOOP;

    RETURN checks;
END
$$;


-- Returns the bank's fee on a payment of amount kopecks at fee_bp
-- hundredths of a percent, rounded half up.  amount is at most 10^14
-- (fc_recon_kopecks) and fee_bp at most 10^4: the product fits.
CREATE FUNCTION fc_recon_fee(amount bigint, fee_bp int) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (amount * fee_bp + 5000) / 10000
$$;


-- ---------------------------------------------------------------------
-- Matching a registry
--
-- Each line of a reconciled registry is tied to one of our payments by
-- the first key that finds one: the bank's payment id; else the RRN
-- with the approval code (and, for a payment line, the amount); else
-- our order id with the operation within match_window_days of the
-- payment.  The fallbacks never take a payment whose bank payment id
-- contradicts the line's.  An order id is ours alone, so a payment line
-- found by it with another amount is an amount mismatch, not somebody
-- else's payment; an RRN is not, so there the amount is part of the key.
--
-- Then the line's class, first that applies:
--   duplicate        the same operation as an earlier line of the file,
--                    or a payment line of a payment that another line
--                    (this registry or another reconciled one) has
--   fee              a fee-only line
--   unknown          no payment of ours
--   payment lines:   unconfirmed (we never confirmed it), amount_mismatch,
--                    fee_mismatch (against the tariff), else matched
--   refund lines:    amount_mismatch when the bank's refunds of the
--                    payment add up to more than we recorded, else refund
--   chargeback lines: chargeback (money taken back: always a person's
--                    decision)
-- A matched or fee_mismatch payment is reconciled: the bank has it, to
-- the kopeck.  Our confirmed payments of the day that no line has are
-- "missing"; the report finds them, since a later registry may still
-- bring them.
-- ---------------------------------------------------------------------

-- Matches every line of registry r (reconciled, locked by the import)
-- as described above, in four statements over the whole registry
-- rather than a loop over its lines: identical lines, the keys, the
-- classes, the reconciled payments.  Within the registry the first of
-- two payment lines of one payment keeps it, and refunds add up in line
-- order.
CREATE FUNCTION fc_recon_match(r registries, prof registry_profiles,
                               at timestamptz)
    RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    win  interval := make_interval(days => prof.match_window_days);
BEGIN
    UPDATE registry_lines d
       SET class = 'duplicate',
           detail = format('repeats line %s', dup.first_line)
      FROM (SELECT x.id,
                   first_value(x.line_no) OVER w AS first_line,
                   row_number() OVER w AS k
              FROM registry_lines x
             WHERE x.registry_id = r.id
            WINDOW w AS (PARTITION BY x.op_type, x.bank_payment_id,
                                      x.order_id, x.rrn, x.approval_code,
                                      x.amount, x.fee, x.op_at
                         ORDER BY x.line_no)) dup
     WHERE d.id = dup.id
       AND dup.k > 1;

    UPDATE registry_lines d
       SET payment_id = m.pid,
           matched_by = m.how
      FROM (SELECT x.id, k.pid, k.how
              FROM registry_lines x
             CROSS JOIN LATERAL (
                   SELECT p.id AS pid, 'bank_payment_id' AS how, 1 AS rank
                     FROM payments p
                    WHERE p.bank_payment_id = x.bank_payment_id
                   UNION ALL
                   (SELECT p.id, 'rrn', 2
                      FROM payments p
                     WHERE x.approval_code IS NOT NULL
                       AND p.rrn = x.rrn
                       AND p.approval_code = x.approval_code
                       AND (x.kind <> 'payment' OR p.amount = x.amount)
                       AND (p.bank_payment_id IS NULL
                            OR x.bank_payment_id IS NULL)
                     ORDER BY p.id
                     LIMIT 1)
                   UNION ALL
                   SELECT p.id, 'order_id', 3
                     FROM payments p
                    WHERE p.order_id = x.order_id
                      AND (p.bank_payment_id IS NULL
                           OR x.bank_payment_id IS NULL)
                      AND coalesce(p.confirmed_at, p.created_at)
                          BETWEEN x.op_at - win AND x.op_at + win
                   ORDER BY 3
                   LIMIT 1) k
             WHERE x.registry_id = r.id) m
     WHERE d.id = m.id;

    WITH x AS (
        SELECT l.id, l.line_no, l.kind, l.class, l.detail, l.sign,
               l.amount, l.fee, l.op_type, l.payment_id,
               p.status AS p_status, p.amount AS p_amount,
               p.refunded_amount AS p_refunded,
               CASE WHEN l.kind = 'payment' AND prof.fee_bp IS NOT NULL
                    THEN fc_recon_fee(l.amount, prof.fee_bp) END AS efee,
               -- the first payment line of this payment in this file
               first_value(l.line_no) OVER (
                   PARTITION BY l.payment_id, l.kind, l.class IS NULL
                   ORDER BY l.line_no) AS first_line,
               -- what the bank has refunded of it up to this line
               sum(-l.sign * l.amount) OVER (
                   PARTITION BY l.payment_id, l.kind, l.class IS NULL
                   ORDER BY l.line_no) AS refunded_here
          FROM registry_lines l
          LEFT JOIN payments p ON p.id = l.payment_id
         WHERE l.registry_id = r.id
    ), y AS (
        SELECT x.*,
               CASE WHEN x.kind = 'payment' AND x.payment_id IS NOT NULL
                    THEN (SELECT o.line_no || ' of registry ' || o.registry_id
                            FROM registry_lines o
                            JOIN registries g ON g.id = o.registry_id
                           WHERE o.payment_id = x.payment_id
                             AND o.kind = 'payment'
                             AND o.registry_id <> r.id
                             AND o.class <> 'duplicate'
                             AND g.status = 'reconciled'
                           ORDER BY o.id
                           LIMIT 1) END AS elsewhere,
               CASE WHEN x.kind = 'refund' AND x.payment_id IS NOT NULL
                    THEN x.refunded_here
                         + (SELECT coalesce(sum(-o.sign * o.amount), 0)
                              FROM registry_lines o
                              JOIN registries g ON g.id = o.registry_id
                             WHERE o.payment_id = x.payment_id
                               AND o.kind = 'refund'
                               AND o.registry_id <> r.id
                               AND o.class IN ('refund', 'amount_mismatch')
                               AND g.status = 'reconciled') END AS refunded
          FROM x
    ), c AS (
        SELECT y.id, y.efee,
               CASE
               WHEN y.class = 'duplicate' THEN 'duplicate'
               WHEN y.kind = 'fee' THEN 'fee'
               WHEN y.payment_id IS NULL THEN 'unknown'
               WHEN y.kind = 'payment' THEN
                   CASE
                   WHEN y.elsewhere IS NOT NULL
                        OR y.first_line < y.line_no THEN 'duplicate'
                   WHEN y.p_status NOT IN ('CONFIRMED', 'PARTIAL_REFUNDED',
                                           'REFUNDED') THEN 'unconfirmed'
                   WHEN y.amount <> y.p_amount THEN 'amount_mismatch'
                   WHEN y.fee <> y.efee THEN 'fee_mismatch'
                   ELSE 'matched' END
               WHEN y.kind = 'refund' THEN
                   CASE WHEN y.refunded > y.p_refunded THEN 'amount_mismatch'
                        ELSE 'refund' END
               ELSE 'chargeback' END AS class,
               CASE
               WHEN y.class = 'duplicate' THEN y.detail
               WHEN y.kind = 'fee' THEN NULL
               WHEN y.payment_id IS NULL THEN
                   'no payment of ours has this payment id, RRN and '
                   'approval code, or order id'
               WHEN y.kind = 'payment' THEN
                   CASE
                   WHEN y.elsewhere IS NOT NULL THEN
                       format('payment %s is already on line %s',
                              y.payment_id, y.elsewhere)
                   WHEN y.first_line < y.line_no THEN
                       format('payment %s is already on line %s',
                              y.payment_id, y.first_line)
                   WHEN y.p_status NOT IN ('CONFIRMED', 'PARTIAL_REFUNDED',
                                           'REFUNDED') THEN
                       format('the bank paid it out; our payment is %s',
                              y.p_status)
                   WHEN y.amount <> y.p_amount THEN
                       format('the bank has %s RUB, we have %s RUB',
                              fc_recon_money(y.amount),
                              fc_recon_money(y.p_amount))
                   WHEN y.fee <> y.efee THEN
                       format('fee %s RUB, the tariff of %s%% gives %s RUB',
                              fc_recon_money(y.fee),
                              fc_recon_money(prof.fee_bp),
                              fc_recon_money(y.efee))
                   END
               WHEN y.kind = 'refund' THEN
                   CASE WHEN y.refunded > y.p_refunded THEN
                       format('the bank has refunded %s RUB of this payment '
                              'in all, we recorded %s RUB',
                              fc_recon_money(y.refunded::bigint),
                              fc_recon_money(y.p_refunded))
                   END
               ELSE
                   format('%s of %s RUB on payment %s: the client''s balance '
                          'still has the money', y.op_type,
                          fc_recon_money(y.amount), y.payment_id)
               END AS detail
          FROM y
    )
    UPDATE registry_lines d
       SET class = c.class,
           detail = c.detail,
           expected_fee = c.efee
      FROM c
     WHERE d.id = c.id;

    INSERT INTO payment_reconciliations (payment_id, registry_id, line_id,
                                         reconciled_at)
    SELECT l.payment_id, r.id, l.id, at
      FROM registry_lines l
     WHERE l.registry_id = r.id
       AND l.class IN ('matched', 'fee_mismatch')
    ON CONFLICT (payment_id) DO NOTHING;
END
$$;


-- Takes registry old out of use in favour of registry new_id: its
-- payments are no longer reconciled by it.
CREATE FUNCTION fc_recon_supersede(old registries, new_id bigint)
    RETURNS void
LANGUAGE sql AS $$
    DELETE FROM payment_reconciliations WHERE registry_id = old.id;

    UPDATE registries
       SET status = 'superseded',
           superseded_by = new_id
     WHERE id = old.id;
$$;


-- Returns the registry of bank reconciled for day, a null row if none.
CREATE FUNCTION fc_recon_reconciled(bank text, day date) RETURNS registries
LANGUAGE sql STABLE AS $$
    SELECT *
      FROM registries r
     WHERE r.bank = fc_recon_reconciled.bank
       AND r.registry_date = day
       AND r.status = 'reconciled'
$$;


-- ---------------------------------------------------------------------
-- JSON of registries
-- ---------------------------------------------------------------------

-- Returns the line classes in the order the report lists differences.
CREATE FUNCTION fc_recon_classes() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['matched', 'amount_mismatch', 'unconfirmed', 'unknown',
                 'duplicate', 'fee_mismatch', 'chargeback', 'refund', 'fee']
$$;


-- Returns the problems of registry r that a person must read, as
-- sentences: a conflict, a summary missing or disagreeing, bad lines.
CREATE FUNCTION fc_recon_problems(r registries) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    out_   jsonb := '[]';
    c      jsonb;
BEGIN
    IF r.status = 'conflict' THEN
        out_ := out_ || to_jsonb(format(
            'registry %s of %s for %s was reconciled first: this file is '
            'kept but not matched; import it again with replace=%s to use '
            'it instead', r.conflict_with, r.bank, r.registry_date,
            r.conflict_with));
    ELSIF r.status = 'superseded' THEN
        out_ := out_ || to_jsonb(format(
            'replaced by registry %s', r.superseded_by));
    END IF;

    IF NOT r.summary_found AND EXISTS (SELECT 1 FROM registry_profiles p
                                        WHERE p.bank = r.bank
                                          AND p.summary_required)
    THEN
        out_ := out_ || to_jsonb('no summary line (Итого): the file may '
                                 'be cut off'::text);
    END IF;

    FOR c IN SELECT e FROM jsonb_array_elements(r.summary) e
              WHERE NOT (e ->> 'ok')::boolean
    LOOP
        out_ := out_ || to_jsonb(format(
            'summary line %s (%s): %s %s in the file, %s in its lines',
            c ->> 'line', c ->> 'label', c ->> 'what',
            CASE WHEN c ->> 'what' = 'lines' THEN c ->> 'file'
                 ELSE fc_recon_money((c ->> 'file')::numeric::bigint) END,
            CASE WHEN c ->> 'what' = 'lines' THEN c ->> 'computed'
                 ELSE fc_recon_money((c ->> 'computed')::numeric::bigint)
            END));
    END LOOP;

    IF jsonb_array_length(r.bad_lines) > 0 THEN
        out_ := out_ || to_jsonb(format(
            '%s line(s) could not be read, the first: line %s: %s',
            jsonb_array_length(r.bad_lines), r.bad_lines -> 0 ->> 'line',
            r.bad_lines -> 0 ->> 'reason'));
    END IF;

    RETURN out_;
END
$$;


-- Returns the registry object of docs/reconciliation.md: what the file
-- was, how it read, the classes of its lines and its money.
CREATE FUNCTION fc_recon_registry_json(r registries) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    classes  jsonb;
    money    jsonb;
BEGIN
    SELECT jsonb_object_agg(c, (SELECT count(*) FROM registry_lines l
                                 WHERE l.registry_id = r.id
                                   AND l.class = c))
      INTO classes
      FROM unnest(fc_recon_classes()) c;

    SELECT jsonb_build_object(
               'lines', count(*),
               'payments', coalesce(sum(l.amount)
                                    FILTER (WHERE l.kind = 'payment'), 0),
               'refunds', coalesce(sum(-l.sign * l.amount)
                                   FILTER (WHERE l.kind = 'refund'), 0),
               'chargebacks', coalesce(sum(-l.sign * l.amount)
                                       FILTER (WHERE l.kind = 'chargeback'),
                                       0),
               'fees', coalesce(sum(l.fee), 0),
               'net_payout', coalesce(sum(l.sign * l.amount), 0)
                             - coalesce(sum(l.fee), 0))
      INTO money
      FROM registry_lines l
     WHERE l.registry_id = r.id;

    RETURN jsonb_build_object(
               'id', r.id,
               'bank', r.bank,
               'filename', r.filename,
               'sha256', r.sha256,
               'size', r.size,
               'encoding', r.encoding,
               'date', r.registry_date,
               'expected_date',
                   fc_registry_expected_date(r.registry_date,
                                             fc_recon_region()),
               'status', r.status,
               'conflict_with', r.conflict_with,
               'superseded_by', r.superseded_by,
               'source', r.source,
               'imported_by', r.imported_by,
               'imported_at', fc_cab_time(r.imported_at, fc_recon_tz()),
               'header_line', r.header_line,
               'lines', money -> 'lines',
               'rows_read', r.rows_read,
               'bad_lines', r.bad_lines,
               'summary', jsonb_build_object('found', r.summary_found,
                                             'ok', r.summary_ok,
                                             'checks', r.summary),
               'classes', classes,
               'totals', money - 'lines',
               'problems', fc_recon_problems(r));
END
$$;


-- ---------------------------------------------------------------------
-- The import
-- ---------------------------------------------------------------------

-- Imports a registry file of bank: bytes as received, filename for
-- people (and for the day when the file has no operation), replace the
-- id of the reconciled registry of the same day that this file is to
-- take the place of, day the registry's day when the caller knows
-- better than the file, imported_by the operator, at the clock, source
-- 'api' or 'fcreg'.  Returns the registry object with "duplicate" and
-- "reconciliation" (the day's report totals).
--
-- The same bytes again change nothing ("duplicate": true), unless they
-- are a registry flagged as a conflict and replace is given: then that
-- registry is reconciled in place of the other.  A file that cannot be
-- a registry at all (not text, no header, an unknown bank) is FC422 and
-- leaves nothing behind; bad lines do not stop the others.  Imports
-- take one lock, so that two files of one day cannot both be first.
CREATE FUNCTION fc_registry_import(bytes bytea, bank text, filename text,
                                   replace bigint DEFAULT NULL,
                                   day date DEFAULT NULL,
                                   imported_by bigint DEFAULT NULL,
                                   at timestamptz DEFAULT now(),
                                   source text DEFAULT 'fcreg')
    RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prof     registry_profiles;
    r        registries;
    prev      registries;
    dec      record;
    hdr      record;
    ld       record;
    m        text[];
    answer   jsonb;
BEGIN
    SELECT * INTO prof FROM registry_profiles p
     WHERE p.bank = fc_registry_import.bank;

    IF prof.bank IS NULL THEN
        PERFORM fc_raise(422, 'validation_failed', format(
            'bank: no registry profile %s; known: %s',
            fc_recon_quote(fc_registry_import.bank),
            (SELECT string_agg(p.bank, ', ' ORDER BY p.bank)
               FROM registry_profiles p)));
    END IF;

    IF bytes IS NULL OR length(bytes) = 0 THEN
        PERFORM fc_raise(422, 'validation_failed',
                         'body: the registry file is empty');
    END IF;

    filename := coalesce(nullif(fc_recon_trim(filename), ''), 'registry');
    IF length(filename) > 255 THEN
        PERFORM fc_raise(422, 'validation_failed', format(
            'filename: at most 255 characters, got %s', length(filename)));
    END IF;

    -- "fcrg": any constant nothing else in the database locks on
    PERFORM pg_advisory_xact_lock(x'66637267'::int);

    SELECT * INTO r FROM registries
     WHERE sha256 = encode(sha256(bytes), 'hex');

    IF r.id IS NOT NULL THEN
        IF replace IS NULL OR r.status <> 'conflict' THEN
            RETURN fc_recon_registry_json(r)
                   || jsonb_build_object('duplicate', true,
                                         'reconciliation',
                                         fc_recon_report(r.registry_date,
                                                         at, false)
                                         -> 'totals');
        END IF;

        prev := fc_recon_reconciled(r.bank, r.registry_date);
    ELSE
        dec := fc_recon_decode(bytes, prof.encoding);
        hdr := fc_recon_find_header(dec.txt, prof);

        -- a conflict until its day is known and no other registry of
        -- that day stands in the way
        INSERT INTO registries (bank, filename, sha256, size, encoding,
                                content, status, header_line, source,
                                imported_by, imported_at)
        VALUES (prof.bank, filename, encode(sha256(bytes), 'hex'),
                length(bytes), dec.encoding, bytes, 'conflict',
                hdr.line_no, source, imported_by, at)
        RETURNING * INTO r;

        ld := fc_recon_load(r, dec.txt, prof, hdr.pos, hdr.headers);

        IF day IS NULL THEN
            SELECT l.op_date INTO day
              FROM registry_lines l
             WHERE l.registry_id = r.id
             GROUP BY l.op_date
             ORDER BY count(*) DESC, l.op_date
             LIMIT 1;
        END IF;

        IF day IS NULL THEN
            m := regexp_match(filename, '([0-9]{4}-[0-9]{2}-[0-9]{2}'
                                        '|[0-9]{2}\.[0-9]{2}\.[0-9]{4})');
            day := (fc_recon_time(m[1], fc_recon_tz())
                    AT TIME ZONE fc_recon_tz())::date;
        END IF;

        IF day IS NULL THEN
            PERFORM fc_raise(422, 'validation_failed',
                'date: the file has no operation to tell its day by and '
                'its name has no date; give the day (date=YYYY-MM-DD)');
        END IF;

        UPDATE registries
           SET registry_date = day,
               rows_read = ld.rows_read,
               bad_lines = ld.bad,
               summary_found = jsonb_array_length(ld.summaries) > 0
         WHERE id = r.id
        RETURNING * INTO r;

        UPDATE registries
           SET summary = fc_recon_summary_checks(r, ld.summaries, hdr.pos)
         WHERE id = r.id
        RETURNING * INTO r;

        UPDATE registries
           SET summary_ok = CASE WHEN jsonb_array_length(summary) > 0
                                 THEN NOT jsonb_path_exists(summary,
                                          '$[*] ? (@.ok == false)') END
         WHERE id = r.id
        RETURNING * INTO r;

        prev := fc_recon_reconciled(r.bank, r.registry_date);

        IF prev.id IS NOT NULL AND replace IS NULL THEN
            UPDATE registries
               SET status = 'conflict',
                   conflict_with = prev.id
             WHERE id = r.id
            RETURNING * INTO r;

            RETURN fc_recon_registry_json(r)
                   || jsonb_build_object('duplicate', false,
                                         'reconciliation',
                                         fc_recon_report(r.registry_date,
                                                         at, false)
                                         -> 'totals');
        END IF;
    END IF;

    IF replace IS NOT NULL AND prev.id IS DISTINCT FROM replace THEN
        PERFORM fc_raise(409, 'conflict', format(
            'replace: registry %s is not the reconciled registry of %s for '
            '%s (%s)', replace, r.bank, r.registry_date,
            CASE WHEN prev.id IS NULL THEN 'there is none'
                 ELSE 'that is ' || prev.id END));
    END IF;

    IF prev.id IS NOT NULL THEN
        PERFORM fc_recon_supersede(prev, r.id);
    END IF;

    UPDATE registries SET status = 'reconciled' WHERE id = r.id
    RETURNING * INTO r;

    PERFORM fc_recon_match(r, prof, at);

    RETURN fc_recon_registry_json(r)
           || jsonb_build_object('duplicate', false,
                                 'reconciliation',
                                 fc_recon_report(r.registry_date, at,
                                                 false) -> 'totals');
END
$$;


-- ---------------------------------------------------------------------
-- The report of a day
-- ---------------------------------------------------------------------

-- Returns the bank's side of a difference: one registry line.
CREATE FUNCTION fc_recon_line_json(l registry_lines) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'registry_id', l.registry_id,
               'line', l.line_no,
               'op_at', fc_cab_time(l.op_at, fc_recon_tz()),
               'op_type', l.op_type,
               'bank_payment_id', l.bank_payment_id,
               'order_id', l.order_id,
               'rrn', l.rrn,
               'approval_code', l.approval_code,
               'pan', l.pan,
               'terminal', l.terminal,
               'amount', l.amount,
               'fee', l.fee,
               'expected_fee', l.expected_fee,
               'payout', l.payout,
               'matched_by', l.matched_by,
               'extra', l.extra)
$$;


-- Returns our side of a difference: one payment.
CREATE FUNCTION fc_recon_payment_json(p payments) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', p.id,
               'order_id', p.order_id,
               'bank_payment_id', p.bank_payment_id,
               'contract_id', p.contract_id,
               'amount', p.amount,
               'refunded_amount', p.refunded_amount,
               'status', p.status,
               'rrn', p.rrn,
               'approval_code', p.approval_code,
               'pan', p.pan,
               'confirmed_at', fc_cab_time(p.confirmed_at, fc_recon_tz()))
$$;


-- Returns the payments we confirmed on the Moscow day `day` that no
-- reconciled registry has a payment line of.
CREATE FUNCTION fc_recon_missing(day date) RETURNS SETOF payments
LANGUAGE sql STABLE AS $$
    SELECT p.*
      FROM payments p
     WHERE p.confirmed_at >= day::timestamp AT TIME ZONE fc_recon_tz()
       AND p.confirmed_at < (day + 1)::timestamp AT TIME ZONE fc_recon_tz()
       AND p.status IN ('CONFIRMED', 'PARTIAL_REFUNDED', 'REFUNDED')
       AND NOT EXISTS (SELECT 1
                         FROM registry_lines l
                         JOIN registries g ON g.id = l.registry_id
                        WHERE l.payment_id = p.id
                          AND l.kind = 'payment'
                          AND g.status = 'reconciled')
$$;


-- Returns the reconciliation of the Moscow day `day` as seen at `at`
-- (docs/reconciliation.md): the registries of that day, whether the
-- registry is still awaited or overdue, the totals of our side, the
-- bank's side and each class, and, when detailed, every difference
-- that needs a person with both sides' data: the line classes other
-- than matched, refund and fee, our confirmed payments of the day that
-- no reconciled registry has (once one has come: before, the registry
-- is merely awaited), and the lines that could not be read.  The
-- unmatched money comes first.  Sums are numeric.
CREATE FUNCTION fc_recon_report(day date, at timestamptz,
                                detailed boolean DEFAULT true)
    RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tz        text := fc_recon_tz();
    ids       bigint[];
    regs      jsonb;
    ours      jsonb;
    bank      jsonb;
    classes   jsonb;
    missing   jsonb;
    nbad      bigint;
    ndiff     bigint;
    diffs     jsonb := '[]';
    payout    numeric;
    state     text;
BEGIN
    SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}'),
           coalesce(sum(jsonb_array_length(r.bad_lines)), 0)
      INTO ids, nbad
      FROM registries r
     WHERE r.registry_date = day
       AND r.status = 'reconciled';

    SELECT coalesce(jsonb_agg(fc_recon_registry_json(r)
                              ORDER BY r.status <> 'reconciled', r.id), '[]')
      INTO regs
      FROM registries r
     WHERE r.registry_date = day;

    state := CASE WHEN cardinality(ids) > 0 THEN 'reconciled'
                  WHEN at >= fc_registry_deadline(day) THEN 'missing'
                  ELSE 'awaited' END;

    SELECT jsonb_build_object('count', count(*),
                              'amount', coalesce(sum(p.amount), 0))
      INTO ours
      FROM payments p
     WHERE p.confirmed_at >= day::timestamp AT TIME ZONE tz
       AND p.confirmed_at < (day + 1)::timestamp AT TIME ZONE tz
       AND p.status IN ('CONFIRMED', 'PARTIAL_REFUNDED', 'REFUNDED');

    SELECT jsonb_build_object(
               'count', count(*),
               'amount', coalesce(sum(l.sign * l.amount), 0),
               'payments', coalesce(sum(l.amount)
                                    FILTER (WHERE l.kind = 'payment'), 0),
               'refunds', coalesce(sum(-l.sign * l.amount)
                                   FILTER (WHERE l.kind = 'refund'), 0),
               'chargebacks', coalesce(sum(-l.sign * l.amount)
                                       FILTER (WHERE l.kind = 'chargeback'),
                                       0),
               'fees', coalesce(sum(l.fee), 0),
               'expected_fees', coalesce(sum(l.expected_fee), 0),
               'net_payout', coalesce(sum(l.sign * l.amount), 0)
                             - coalesce(sum(l.fee), 0),
               'differences', count(*) FILTER (WHERE l.class NOT IN
                                               ('matched', 'refund', 'fee')))
      INTO bank
      FROM registry_lines l
     WHERE l.registry_id = ANY (ids);

    SELECT jsonb_object_agg(c, jsonb_build_object(
               'count', coalesce(n.count, 0),
               'amount', coalesce(n.amount, 0)))
      INTO classes
      FROM unnest(fc_recon_classes()) c
      LEFT JOIN (SELECT l.class, count(*) AS count, sum(l.amount) AS amount
                   FROM registry_lines l
                  WHERE l.registry_id = ANY (ids)
                  GROUP BY l.class) n ON n.class = c;

    SELECT jsonb_build_object('count', count(*),
                              'amount', coalesce(sum(p.amount), 0))
      INTO missing
      FROM fc_recon_missing(day) p
     WHERE cardinality(ids) > 0;

    ndiff := (bank ->> 'differences')::bigint
             + (missing ->> 'count')::bigint + nbad;

    IF detailed AND ndiff > 0 THEN
        WITH d AS (
            SELECT 1 AS grp, array_position(fc_recon_classes(), l.class)
                       AS k, l.registry_id AS a, l.line_no AS b,
                   jsonb_build_object(
                       'class', l.class,
                       'detail', l.detail,
                       'line', fc_recon_line_json(l),
                       'payment', (SELECT fc_recon_payment_json(p)
                                     FROM payments p
                                    WHERE p.id = l.payment_id)) AS e
              FROM registry_lines l
             WHERE l.registry_id = ANY (ids)
               AND l.class IN ('amount_mismatch', 'unconfirmed')
            UNION ALL
            SELECT 2, 0, p.id, 0, jsonb_build_object(
                       'class', 'missing',
                       'detail', 'confirmed by us, not in the registry',
                       'line', NULL,
                       'payment', fc_recon_payment_json(p))
              FROM fc_recon_missing(day) p
             WHERE cardinality(ids) > 0
            UNION ALL
            SELECT 3, array_position(fc_recon_classes(), l.class),
                   l.registry_id, l.line_no,
                   jsonb_build_object(
                       'class', l.class,
                       'detail', l.detail,
                       'line', fc_recon_line_json(l),
                       'payment', (SELECT fc_recon_payment_json(p)
                                     FROM payments p
                                    WHERE p.id = l.payment_id))
              FROM registry_lines l
             WHERE l.registry_id = ANY (ids)
               AND l.class NOT IN ('matched', 'refund', 'fee',
                                   'amount_mismatch', 'unconfirmed')
            UNION ALL
            SELECT 4, 0, r.id, (b ->> 'line')::int, jsonb_build_object(
                       'class', 'bad_line',
                       'detail', b ->> 'reason',
                       'line', jsonb_build_object('registry_id', r.id,
                                                  'line', b -> 'line'),
                       'payment', NULL)
              FROM registries r
             CROSS JOIN LATERAL jsonb_array_elements(r.bad_lines) b
             WHERE r.id = ANY (ids)
        )
        SELECT jsonb_agg(d.e ORDER BY d.grp, d.k, d.a, d.b)
          INTO diffs
          FROM d;
    END IF;

    SELECT sum((c ->> 'file')::numeric)
      INTO payout
      FROM registries r
     CROSS JOIN LATERAL jsonb_array_elements(r.summary) c
     WHERE r.id = ANY (ids)
       AND c ->> 'what' = 'payout';

    RETURN jsonb_build_object(
        'date', day,
        'expected_date', fc_registry_expected_date(day, fc_recon_region()),
        'deadline', fc_cab_time(fc_registry_deadline(day), tz),
        'registry', state,
        'registries', regs,
        'totals', jsonb_build_object(
            'our_payments', ours,
            'bank_lines', jsonb_build_object('count', bank -> 'count',
                                             'amount', bank -> 'amount'),
            'matched', classes -> 'matched',
            'amount_mismatch', classes -> 'amount_mismatch',
            'fee_mismatch', classes -> 'fee_mismatch',
            'unconfirmed', classes -> 'unconfirmed',
            'missing', missing,
            'unknown', classes -> 'unknown',
            'duplicate', classes -> 'duplicate',
            'refund', classes -> 'refund',
            'chargeback', classes -> 'chargeback',
            'fee_only', classes -> 'fee',
            'bad_lines', nbad,
            'payments', bank -> 'payments',
            'refunds', bank -> 'refunds',
            'chargebacks', bank -> 'chargebacks',
            'fees', bank -> 'fees',
            'expected_fees', bank -> 'expected_fees',
            'net_payout', bank -> 'net_payout',
            'file_payout', payout,
            'needs_attention', ndiff))
        || CASE WHEN detailed THEN jsonb_build_object('differences', diffs)
                ELSE '{}' END;
END
$$;


-- Returns t as one CSV field: quoted when it holds the delimiter, a
-- quote or a line break; a text that a spreadsheet would take for a
-- formula (=, +, -, @) gets a leading apostrophe, since a registry's
-- payer names come from outside.
CREATE FUNCTION fc_recon_csv_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v ~ '[;"\r\n]'
                THEN '"' || replace(v, '"', '""') || '"'
                ELSE v END
      FROM (SELECT CASE WHEN t ~ '^[=+@\t\r-]' THEN '''' || t
                        ELSE coalesce(t, '') END AS v) x
$$;


-- Returns a JSON number of kopecks as roubles with a decimal comma, as
-- Russian spreadsheets read them; '' for null.
CREATE FUNCTION fc_recon_csv_money(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number'
                THEN fc_recon_money((v #>> '{}')::numeric::bigint, ',')
                ELSE '' END
$$;


-- Returns the report as CSV for the accountants: UTF-8 with a byte
-- order mark (so that Excel does not take it for cp1251), ';' and CRLF.
-- First a header row and one row per difference with both sides' data,
-- then, after an empty line, the totals under a header of their own.
CREATE FUNCTION fc_recon_csv(report jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT E'\ufeff'
           || 'class;detail;registry_id;line;op_at;op_type;'
           || 'bank_payment_id;order_id;rrn;approval_code;pan;amount;fee;'
           || 'expected_fee;payment_id;our_order_id;our_bank_payment_id;'
           || 'our_amount;our_refunded_amount;our_status;confirmed_at;'
           || 'extra' || E'\r\n'
           || coalesce((
               SELECT string_agg(concat_ws(';',
                          fc_recon_csv_text(d ->> 'class'),
                          fc_recon_csv_text(d ->> 'detail'),
                          coalesce(d #>> '{line,registry_id}', ''),
                          coalesce(d #>> '{line,line}', ''),
                          fc_recon_csv_text(d #>> '{line,op_at}'),
                          fc_recon_csv_text(d #>> '{line,op_type}'),
                          fc_recon_csv_text(d #>> '{line,bank_payment_id}'),
                          fc_recon_csv_text(d #>> '{line,order_id}'),
                          fc_recon_csv_text(d #>> '{line,rrn}'),
                          fc_recon_csv_text(d #>> '{line,approval_code}'),
                          fc_recon_csv_text(d #>> '{line,pan}'),
                          fc_recon_csv_money(d #> '{line,amount}'),
                          fc_recon_csv_money(d #> '{line,fee}'),
                          fc_recon_csv_money(d #> '{line,expected_fee}'),
                          coalesce(d #>> '{payment,id}', ''),
                          fc_recon_csv_text(d #>> '{payment,order_id}'),
                          fc_recon_csv_text(
                              d #>> '{payment,bank_payment_id}'),
                          fc_recon_csv_money(d #> '{payment,amount}'),
                          fc_recon_csv_money(
                              d #> '{payment,refunded_amount}'),
                          fc_recon_csv_text(d #>> '{payment,status}'),
                          fc_recon_csv_text(d #>> '{payment,confirmed_at}'),
                          fc_recon_csv_text((
                              SELECT string_agg(e.key || '=' || e.value,
                                                ', ' ORDER BY e.key)
                                FROM jsonb_each_text(d #> '{line,extra}')
                                     e))) || E'\r\n', '' ORDER BY k)
                 FROM jsonb_array_elements(report -> 'differences')
                      WITH ORDINALITY AS x(d, k)), '')
           || E'\r\n'
           || 'total;count;amount' || E'\r\n'
           || (SELECT string_agg(concat_ws(';', t.name,
                                  report #>> ARRAY['totals', t.name,
                                                   'count'],
                                  fc_recon_csv_money(
                                      report #> ARRAY['totals', t.name,
                                                      'amount']))
                                 || E'\r\n', '' ORDER BY t.k)
                 FROM unnest(ARRAY['our_payments', 'bank_lines', 'matched',
                                   'amount_mismatch', 'fee_mismatch',
                                   'unconfirmed', 'missing', 'unknown',
                                   'duplicate', 'refund', 'chargeback',
                                   'fee_only'])
                      WITH ORDINALITY AS t(name, k))
           || (SELECT string_agg(concat_ws(';', t.name, '',
                                  fc_recon_csv_money(
                                      report #> ARRAY['totals', t.name]))
                                 || E'\r\n', '' ORDER BY t.k)
                 FROM unnest(ARRAY['payments', 'refunds', 'chargebacks',
                                   'fees', 'expected_fees', 'net_payout',
                                   'file_payout'])
                      WITH ORDINALITY AS t(name, k))
           || concat_ws(';', 'bad_lines',
                        report #>> '{totals,bad_lines}', '') || E'\r\n'
$$;


-- ---------------------------------------------------------------------
-- Overdue registries
-- ---------------------------------------------------------------------

-- Returns the days of the last registry_lookback_days (Moscow) with
-- payments we confirmed whose registry has not come although its
-- deadline passed at `at`, with the expected day and how many payments
-- wait for it.  One acquiring bank is assumed: payments carry no bank,
-- so a registry of any bank stands for the day.
CREATE FUNCTION fc_registry_missing(at timestamptz DEFAULT now())
    RETURNS TABLE (payment_date date, expected_date date, payments bigint)
LANGUAGE sql STABLE AS $$
    SELECT d.day, fc_registry_expected_date(d.day, fc_recon_region()), d.n
      FROM (SELECT (p.confirmed_at AT TIME ZONE fc_recon_tz())::date AS day,
                   count(*) AS n
              FROM payments p
             WHERE p.confirmed_at IS NOT NULL
               AND p.confirmed_at >= at - make_interval(
                       days => fc_topup_meta_int('registry_lookback_days',
                                                 92)::int)
               AND p.confirmed_at < at
               AND p.status IN ('CONFIRMED', 'PARTIAL_REFUNDED',
                                'REFUNDED')
             GROUP BY 1) d
     WHERE d.day < (at AT TIME ZONE fc_recon_tz())::date
       AND NOT EXISTS (SELECT 1 FROM registries r
                        WHERE r.registry_date = d.day
                          AND r.status = 'reconciled')
       AND at >= fc_registry_deadline(d.day)
     ORDER BY d.day
$$;


-- ---------------------------------------------------------------------
-- Routes of the back office (operators only)
-- ---------------------------------------------------------------------

-- POST /api/v1/backoffice/registries?bank=&filename=&date=&replace= with
-- the registry file itself as the body (any content type but a form):
-- imports it (fc_registry_import).  201 with the registry object for a
-- new file, 200 for one imported before ("duplicate": true).
CREATE FUNCTION fc_route_registry_import(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u        users := fc_session_user(req);
    q        jsonb := fc_cab_query(req);
    bank     text;
    bytes    bytea;
    answer   jsonb;
BEGIN
    PERFORM fc_require_role(u, 'operator');

    bank := coalesce(fc_arg_text(q, 'bank', 32, false), 'tbank');

    IF coalesce(req ->> 'content_type', '') ~* '^\s*multipart/' THEN
        RETURN fc_error(415, 'unsupported_media_type',
                        'send the registry file itself as the body '
                        '(curl --data-binary @file), not a form');
    END IF;

    IF coalesce(req ->> 'body_base64', '') = '' THEN
        RETURN fc_error(422, 'validation_failed',
                        'body: the registry file is required');
    END IF;

    bytes := decode(req ->> 'body_base64', 'base64');

    answer := fc_registry_import(
                  bytes, bank, fc_arg_text(q, 'filename', 255, false),
                  fc_arg_int(q, 'replace', 1, NULL, false),
                  fc_arg_date(q, 'date', false), u.id, fc_now(req), 'api');

    IF NOT (answer -> 'duplicate')::boolean THEN
        PERFORM fc_audit(u, 'registry_import', 'registry', answer ->> 'id',
                         req, jsonb_build_object(
                             'bank', answer -> 'bank',
                             'filename', answer -> 'filename',
                             'date', answer -> 'date',
                             'status', answer -> 'status',
                             'sha256', answer -> 'sha256'));
    END IF;

    RETURN fc_ok(CASE WHEN (answer -> 'duplicate')::boolean THEN 200
                      ELSE 201 END, answer);
END
$$;


-- GET /api/v1/backoffice/registries?date=&limit=&cursor=: the imported
-- registries, newest first, of one day or all.
CREATE FUNCTION fc_route_registries_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    q       jsonb := fc_cab_query(req);
    page_size  int;
    before  bigint;
    day     date;
    items   jsonb;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    page_size := fc_cab_page_size(req);
    before := nullif(fc_cab_cursor_id(req), 0);
    day := fc_arg_date(q, 'date', false);

    SELECT coalesce(jsonb_agg(fc_recon_registry_json(r) ORDER BY r.id DESC),
                    '[]')
      INTO items
      FROM (SELECT *
              FROM registries g
             WHERE (day IS NULL OR g.registry_date = day)
               AND (before IS NULL OR g.id < before)
             ORDER BY g.id DESC
             LIMIT page_size + 1) r;

    RETURN fc_ok(200, fc_cab_page(items, page_size));
END
$$;


-- GET /api/v1/backoffice/reconciliations?date=YYYY-MM-DD&format=json|csv:
-- the report of that day's operations (fc_recon_report), as JSON or as
-- CSV for the accountants.
CREATE FUNCTION fc_route_reconciliation_get(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    q       jsonb := fc_cab_query(req);
    day     date;
    fmt     text;
    report  jsonb;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    day := fc_arg_date(q, 'date');
    fmt := fc_cab_arg_enum(q, 'format', ARRAY['json', 'csv'], false, 'json');

    report := fc_recon_report(day, fc_now(req));

    IF fmt = 'json' THEN
        RETURN fc_ok(200, report);
    END IF;

    RETURN jsonb_build_object(
        'status', 200,
        'text', fc_recon_csv(report),
        'content_type', 'text/csv; charset=utf-8',
        'headers', jsonb_build_object(
            'Content-Disposition',
            format('attachment; filename="reconciliation-%s.csv"', day)));
END
$$;


-- Returns the region code of a calendar request (a path parameter or a
-- query value); 422 naming field when it is not one.
CREATE FUNCTION fc_calendar_region_arg(v text, field text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF v IS NULL OR v !~ '^[A-Z]{2}(-[A-Z0-9]{1,3})?$' THEN
        PERFORM fc_raise(422, 'validation_failed', format(
            '%s: must be a country code like RU or a region code like '
            'RU-TA, got %s', field, fc_cab_quote(to_jsonb(v))));
    END IF;

    RETURN v;
END
$$;


-- Returns the calendar day object: what decides the day in region and
-- whether it is a working day.
CREATE FUNCTION fc_calendar_day_json(day date, region text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c  business_calendar := fc_calendar_row(day, region);
BEGIN
    RETURN jsonb_build_object(
               'date', day,
               'region', region,
               'kind', coalesce(c.kind,
                                CASE WHEN extract(isodow FROM day) < 6
                                     THEN 'weekday' ELSE 'weekend' END),
               'set_in', c.region,
               'note', c.note,
               'business_day', fc_business_day(day, region));
END
$$;


-- GET /api/v1/backoffice/calendar?region=RU&year=2026: the days of a
-- year that differ from the five-day week in region (its own rows and
-- its country's), and how many working days the year has.
CREATE FUNCTION fc_route_calendar_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    q       jsonb := fc_cab_query(req);
    rgn     text;
    yr      int;
    first_  date;
    days    jsonb;
    working bigint;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    rgn := fc_calendar_region_arg(coalesce(q ->> 'region', 'RU'),
                                  'region');
    yr := coalesce(fc_arg_int(q, 'year', 2000, 2099, false),
                     extract(year FROM fc_now(req) AT TIME ZONE
                                       fc_recon_tz()));
    first_ := make_date(yr, 1, 1);

    SELECT coalesce(jsonb_agg(fc_calendar_day_json(d.day, rgn)
                              ORDER BY d.day), '[]')
      INTO days
      FROM (SELECT DISTINCT c.day
              FROM business_calendar c
             WHERE c.region IN (rgn, split_part(rgn, '-', 1))
               AND c.day >= first_
               AND c.day < (first_ + interval '1 year')::date) d;

    SELECT count(*) INTO working
      FROM generate_series(first_, (first_ + interval '1 year -1 day')::date,
                           interval '1 day') g
     WHERE fc_business_day(g::date, rgn);

    RETURN fc_ok(200, jsonb_build_object('region', rgn,
                                         'year', yr,
                                         'working_days', working,
                                         'days', days));
END
$$;


-- PUT /api/v1/backoffice/calendar/{region}/{date} {"kind", "note"}:
-- sets what a day is in region: holiday, workday (a moved working day),
-- short, or default (the row is removed: the day is what its country's
-- calendar or the weekday makes it).  Returns the day object.
CREATE FUNCTION fc_route_calendar_set(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    body    jsonb;
    rgn     text;
    d       date;
    k       text;
    note_   text;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    rgn := fc_calendar_region_arg(req -> 'params' ->> 0, 'region');
    d := fc_arg_date(jsonb_build_object('date', req -> 'params' -> 1),
                     'date');
    IF extract(year FROM d) NOT BETWEEN 2000 AND 2099 THEN
        RETURN fc_error(422, 'validation_failed', format(
            'date: must be in the years 2000 to 2099, got "%s"', d));
    END IF;

    body := fc_cab_body(req);
    PERFORM fc_cab_known_fields(body, ARRAY['kind', 'note']);
    k := fc_cab_arg_enum(body, 'kind',
                         ARRAY['holiday', 'workday', 'short', 'default']);
    note_ := fc_cab_arg_opt_text(body, 'note', 200);

    IF k = 'default' THEN
        DELETE FROM business_calendar c
         WHERE c.region = rgn
           AND c.day = d;
    ELSE
        INSERT INTO business_calendar (region, day, kind, note, updated_at,
                                       updated_by)
        VALUES (rgn, d, k, note_, fc_now(req), u.id)
        ON CONFLICT ON CONSTRAINT business_calendar_pkey DO UPDATE
           SET kind = EXCLUDED.kind,
               note = EXCLUDED.note,
               updated_at = EXCLUDED.updated_at,
               updated_by = EXCLUDED.updated_by;
    END IF;

    PERFORM fc_audit(u, 'calendar_set', 'calendar', rgn || ':' || d,
                     req, jsonb_build_object('kind', k, 'note', note_));

    RETURN fc_ok(200, fc_calendar_day_json(d, rgn));
END
$$;


-- ---------------------------------------------------------------------
-- Metrics
-- ---------------------------------------------------------------------

-- Returns Prometheus text lines for the gauges nginx cannot count: the
-- lines of 0006 (outbox rows by kind and state, anomalous
-- notifications, payments by status) and the days whose bank registry
-- is overdue.  Every combination is written, zeros too, so that a
-- series never disappears.
CREATE OR REPLACE FUNCTION fc_metrics_text() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '# HELP fc_outbox_rows Outbox rows by kind and state.' || E'\n'
           || '# TYPE fc_outbox_rows gauge' || E'\n'
           || (SELECT string_agg(format('fc_outbox_rows{kind="%s",'
                                        'state="%s"} %s', k, s,
                                        (SELECT count(*) FROM outbox o
                                          WHERE o.kind = k
                                            AND o.state = s)),
                                 E'\n' ORDER BY k, s)
                 FROM unnest(ARRAY['crm', 'onec', 'receipt']) k,
                      unnest(ARRAY['dead', 'done', 'pending']) s)
           || E'\n'
           || '# HELP fc_payment_anomalies Bank notifications recorded as '
              'anomalies.' || E'\n'
           || '# TYPE fc_payment_anomalies gauge' || E'\n'
           || 'fc_payment_anomalies '
           || (SELECT count(*) FROM payment_events
                WHERE outcome = 'anomaly') || E'\n'
           || '# HELP fc_payments Card payments by status.' || E'\n'
           || '# TYPE fc_payments gauge' || E'\n'
           || (SELECT string_agg(format('fc_payments{status="%s"} %s', s,
                                        (SELECT count(*) FROM payments p
                                          WHERE p.status = s)),
                                 E'\n' ORDER BY fc_topup_rank(s))
                 FROM unnest(ARRAY['NEW', 'AUTHORIZED', 'CONFIRMED',
                                   'PARTIAL_REFUNDED', 'REFUNDED',
                                   'REJECTED']) s)
           || E'\n'
           || '# HELP fc_registry_missing Days of payments whose bank '
              'registry is past its deadline.' || E'\n'
           || '# TYPE fc_registry_missing gauge' || E'\n'
           || 'fc_registry_missing '
           || (SELECT count(*) FROM fc_registry_missing(now())) || E'\n'
$$;

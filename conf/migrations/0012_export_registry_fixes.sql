-- Three holes in input that comes from outside: an export cursor whose
-- since no date of the export can give, a registry file without
-- operations that took a day from the bank's real file, and a negative
-- fee in a registry line that raised the net payout.
--
-- fc_export_cursor_parse() and fc_registry_import() are replaced with
-- the same signatures; fc_recon_row() wraps 0009's, renamed
-- fc_recon_row_fields().


-- ---------------------------------------------------------------------
-- The export cursor
-- ---------------------------------------------------------------------

-- Decodes a cursor of fc_export_cursor() into its position and since;
-- raises 422 for anything the export never gave out.
--
-- A since comes from the first call's date, 1900-01-01 to 2999-12-31
-- (fc_arg_date), at midnight of the organization's zone.  A cursor does
-- not say the zone, so a since is accepted from 1899-12-31 to
-- 2999-12-31 24:00 UTC: the midnights of those dates in any zone of the
-- world fall within them.  Anything further out is a forged cursor, and
-- would also overflow to_timestamp().
CREATE OR REPLACE FUNCTION fc_export_cursor_parse(cursor text,
                                                  OUT xid xid8,
                                                  OUT id bigint,
                                                  OUT since timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    earliest  CONSTANT bigint :=
                  extract(epoch FROM timestamptz '1899-12-31 00:00+00');
    latest    CONSTANT bigint :=
                  extract(epoch FROM timestamptz '3000-01-01 00:00+00');
    t         text;
    secs      bigint;
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
    ELSE
        secs := nullif(split_part(t, '.', 3), '')::bigint;
        IF secs NOT BETWEEN earliest AND latest THEN
            t := NULL;
        END IF;
    END IF;

    IF t IS NULL THEN
        PERFORM fc_cab_invalid(format(
            'cursor: not a cursor of this export, got %s',
            fc_cab_quote(to_jsonb(left(cursor, 100)))));
    END IF;

    xid := split_part(t, '.', 1)::xid8;
    id := split_part(t, '.', 2)::bigint;
    since := to_timestamp(secs);
END
$$;


-- ---------------------------------------------------------------------
-- A registry line's fee
-- ---------------------------------------------------------------------

ALTER FUNCTION fc_recon_row(text[], int[], text[], jsonb, text)
    RENAME TO fc_recon_row_fields;


-- Reads one operation line as fc_recon_row_fields() does (0009), and
-- refuses a negative fee: the bank's fee is what it keeps, and an
-- operation's direction comes from its type alone.  A minus in the fee
-- column would otherwise lower the day's fees and raise its net payout.
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
BEGIN
    SELECT *
      INTO err, op_at, op_type, sign, kind, bank_payment_id, order_id, rrn,
           approval_code, pan, terminal, amount, fee, payout, extra
      FROM fc_recon_row_fields(f, pos, headers, ops, tz);

    IF err IS NULL AND fee < 0 THEN
        err := format('%s: a fee is never negative (the operation type '
                      'gives the sign), got %s', headers[pos[10]],
                      fc_recon_quote(fc_recon_field(f, pos[10])));
    END IF;
END
$$;


-- ---------------------------------------------------------------------
-- A registry without operations
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
--
-- As 0009's, but for one case of "the first file of a day is its
-- registry": a reconciled registry that read no operation line (a
-- header, perhaps a summary of nothing) proves only that someone posted
-- it.  The first file of its day with operation lines takes its place
-- at once, as with replace=, instead of being a conflict that leaves
-- the day's payments missing.  An empty file still reconciles a day
-- nobody paid on.
CREATE OR REPLACE FUNCTION fc_registry_import(
    bytes bytea, bank text, filename text, replace bigint DEFAULT NULL,
    day date DEFAULT NULL, imported_by bigint DEFAULT NULL,
    at timestamptz DEFAULT now(), source text DEFAULT 'fcreg')
    RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prof     registry_profiles;
    r        registries;
    prev     registries;
    dec      record;
    hdr      record;
    ld       record;
    m        text[];
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

        -- an empty registry of the day gives way to one with operations
        IF replace IS NULL AND prev.rows_read = 0 AND r.rows_read > 0 THEN
            replace := prev.id;
        END IF;

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

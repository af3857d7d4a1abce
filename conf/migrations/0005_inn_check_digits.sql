-- An organization's INN must carry valid check digits, not only the
-- right length: a mistyped INN would otherwise reach the fiscal
-- receipts and 1C.  The weights are those of the Federal Tax Service:
-- one check digit for a company's 10 digits, two for a person's 12.
-- core/src/fc_inn.c implements the same rule for the C side.

CREATE FUNCTION fc_inn_valid(inn text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    w10 int[] := '{2,4,10,3,5,9,4,6,8}';
    w11 int[] := '{7,2,4,10,3,5,9,4,6,8}';
    w12 int[] := '{3,7,2,4,10,3,5,9,4,6,8}';
    d   int[];
    s   int;
BEGIN
    IF inn !~ '^([0-9]{10}|[0-9]{12})$' THEN
        RETURN false;
    END IF;

    SELECT array_agg(substr(inn, i, 1)::int ORDER BY i)
      INTO d
      FROM generate_series(1, length(inn)) AS i;

    IF length(inn) = 10 THEN
        SELECT sum(d[i] * w10[i]) INTO s FROM generate_series(1, 9) AS i;
        RETURN (s % 11) % 10 = d[10];
    END IF;

    SELECT sum(d[i] * w11[i]) INTO s FROM generate_series(1, 10) AS i;
    IF (s % 11) % 10 <> d[11] THEN
        RETURN false;
    END IF;

    SELECT sum(d[i] * w12[i]) INTO s FROM generate_series(1, 11) AS i;
    RETURN (s % 11) % 10 = d[12];
END
$$;

ALTER TABLE organizations
    ADD CONSTRAINT organizations_inn_check_digits CHECK (fc_inn_valid(inn));

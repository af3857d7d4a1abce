-- Top-up of a contract by bank card (docs/topup.md): the payments and
-- the bank's notifications about them, the outbox the daemon delivers
-- to the cash register, the CRM and 1C, the routes of the cabinet and
-- the back office, the bank's notification route, and the gauges of
-- /metrics that only PostgreSQL knows.
--
-- The ledger already has the kinds 'topup' and 'topup_refund'; nothing
-- of 0001-0005 changes.


-- ---------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------

-- topup_min and topup_max bound one top-up, in kopecks (100.00 and
-- 1,000,000.00 RUB); public_url is where the bank and the payer's
-- browser reach nginx (scripts/stack sets the stack's own).
INSERT INTO fc_meta (key, value) VALUES
    ('topup_min',  '10000'),
    ('topup_max',  '100000000'),
    ('public_url', 'http://127.0.0.1:18080')
ON CONFLICT (key) DO NOTHING;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- One row per top-up attempt.  order_id is ours and goes to the bank
-- as OrderId; bank_payment_id is the bank's PaymentId, the ref of the
-- ledger credit.  The card data is what the bank reports: the masked
-- PAN only, never the full number.  The fiscal attributes come from
-- the cash register's report through fc_outbox_done().
CREATE TABLE payments (
    id              bigserial   PRIMARY KEY,
    order_id        text        NOT NULL UNIQUE,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    org_id          bigint      NOT NULL REFERENCES organizations,
    user_id         bigint      NOT NULL REFERENCES users,
    amount          bigint      NOT NULL CHECK (amount > 0),
    email           text        NOT NULL,
    status          text        NOT NULL DEFAULT 'NEW'
                                CHECK (status IN ('NEW', 'AUTHORIZED',
                                'CONFIRMED', 'PARTIAL_REFUNDED',
                                'REFUNDED', 'REJECTED')),
    bank_payment_id text        UNIQUE,
    payment_url     text,
    refunded_amount bigint      NOT NULL DEFAULT 0
                                CHECK (refunded_amount BETWEEN 0 AND amount),
    -- why the bank refused it (Init or a notification)
    error_code      text,
    error_message   text,
    pan             text,
    rrn             text,
    approval_code   text,
    fn_number                   text,
    fiscal_document_number      bigint,
    fiscal_document_attribute   bigint,
    receipt_datetime            text,
    ecr_registration_number     text,
    fiscal_receipt_number       bigint,
    shift_number                bigint,
    ofd_receipt_url             text,
    -- the Idempotency-Key header of the request that created it
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX payments_org_idx ON payments (org_id, id);
CREATE INDEX payments_contract_idx ON payments (contract_id, id);

-- Every notification of the bank as received (a full card number, if
-- a bank ever sent one, is masked first), with what it did:
-- applied, stale (older than the payment's status), duplicate, unknown
-- (a status we do not know) or anomaly (reason says which check
-- failed).  payment_id is NULL when the OrderId is not ours.
CREATE TABLE payment_events (
    id              bigserial   PRIMARY KEY,
    payment_id      bigint      REFERENCES payments,
    order_id        text,
    bank_payment_id text,
    bank_status     text,
    amount          bigint,
    outcome         text        NOT NULL CHECK (outcome IN ('applied',
                                'stale', 'duplicate', 'unknown',
                                'anomaly')),
    reason          text,
    body            jsonb       NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'anomaly') = (reason IS NOT NULL))
);

CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, id);
CREATE INDEX payment_events_anomaly_idx ON payment_events (id)
    WHERE outcome = 'anomaly';

-- What the daemon must deliver, written in the transaction that
-- decided it.  idempotency_key is what the receiver deduplicates on:
-- 'receipt:<payment id>' (ATOL's external_id), the Ref_Key GUID for 1C,
-- 'crm:<outbox id>' for the CRM.  A payment has at most one receipt and
-- one 1C document.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('crm', 'receipt',
                                                         'onec')),
    payment_id      bigint      NOT NULL REFERENCES payments,
    idempotency_key text        NOT NULL UNIQUE,
    payload         jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'done',
                                                 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);

CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_payment_idx ON outbox (payment_id, id);
CREATE INDEX outbox_state_idx ON outbox (state, id);
CREATE UNIQUE INDEX outbox_once_idx ON outbox (payment_id, kind)
    WHERE kind IN ('receipt', 'onec');


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- Returns the whole number stored in fc_meta under key, or dflt when it
-- is missing or not a whole number.
CREATE FUNCTION fc_topup_meta_int(key text, dflt bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT m.value::bigint
                       FROM fc_meta m
                      WHERE m.key = fc_topup_meta_int.key
                        AND m.value ~ '^[0-9]{1,18}$'), dflt)
$$;


-- Returns public_url from fc_meta without a trailing slash.
CREATE FUNCTION fc_topup_public_url() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT rtrim(coalesce((SELECT m.value FROM fc_meta m
                            WHERE m.key = 'public_url'),
                          'http://127.0.0.1:18080'), '/')
$$;


-- Returns a JSON value as a whole number: a number without '.', 'e' or
-- 'E', or a string of digits (the bank sends Amount as a number, some
-- ids as strings); NULL for anything else.
CREATE FUNCTION fc_topup_int(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) IN ('number', 'string')
                     AND (v #>> '{}') ~ '^-?[0-9]{1,18}$'
                THEN (v #>> '{}')::bigint END
$$;


-- Returns a JSON scalar as text (a number or a string), NULL for null,
-- objects and arrays; cut to maxlen characters.
CREATE FUNCTION fc_topup_text(v jsonb, maxlen int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) IN ('number', 'string')
                THEN nullif(left(v #>> '{}', maxlen), '') END
$$;


-- Returns a card number masked as the bank masks it (first 6 and last
-- 4 digits): a bank that sends a full number must not get it stored.
-- Anything that is not a full number is returned as it is, cut to 32
-- characters.
CREATE FUNCTION fc_topup_mask_pan(pan text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN pan ~ '^[0-9]{13,19}$'
                THEN left(pan, 6) || repeat('*', length(pan) - 10)
                     || right(pan, 4)
                ELSE left(pan, 32) END
$$;


-- Returns whether t is an e-mail address the cash register and the OFD
-- will accept for the receipt.  Deliberately plain ASCII, no quoted
-- local parts, no IP literals: name@example.com, with a local part of
-- at most 64 characters (dots not first, last or doubled), a domain of
-- at least two labels of letters, digits and inner hyphens, and a top
-- label of letters (or an xn-- label), 254 characters in all.
CREATE FUNCTION fc_topup_email_valid(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    atom    CONSTANT text := '[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+';
    label   CONSTANT text := '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
    top     CONSTANT text := '([A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})';
    local_  text;
    domain  text;
BEGIN
    IF t IS NULL OR length(t) > 254 OR t !~ '^[^@]+@[^@]+$' THEN
        RETURN false;
    END IF;

    local_ := split_part(t, '@', 1);
    domain := split_part(t, '@', 2);

    RETURN length(local_) <= 64
           AND local_ ~ ('^' || atom || '(\.' || atom || ')*$')
           AND domain ~ ('^(' || label || '\.)+' || top || '$');
END
$$;


-- Returns the rank of a payment status: a notification only ever moves
-- a payment to a higher rank.  REJECTED is final and reachable only
-- from NEW and AUTHORIZED; it is ranked apart.
CREATE FUNCTION fc_topup_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status
           WHEN 'NEW' THEN 0
           WHEN 'AUTHORIZED' THEN 1
           WHEN 'CONFIRMED' THEN 2
           WHEN 'PARTIAL_REFUNDED' THEN 3
           WHEN 'REFUNDED' THEN 4
           WHEN 'REJECTED' THEN 5
           END
$$;


-- Returns the payment status a bank status leads to, NULL for a status
-- we do not know.  Besides the statuses of our state machine, the
-- bank's ways of saying that no money was taken (AUTH_FAIL,
-- DEADLINE_EXPIRED, CANCELED, REVERSED) lead to REJECTED, so that such
-- a payment does not hang in NEW; every other status (FORM_SHOWED,
-- 3DS_CHECKING, REFUNDING, ...) is recorded as unknown and changes
-- nothing.
CREATE FUNCTION fc_topup_target(bank_status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
           WHEN bank_status IN ('AUTHORIZED', 'CONFIRMED', 'REJECTED',
                                'PARTIAL_REFUNDED', 'REFUNDED')
           THEN bank_status
           WHEN bank_status IN ('AUTH_FAIL', 'DEADLINE_EXPIRED',
                                'CANCELED', 'REVERSED')
           THEN 'REJECTED'
           END
$$;


-- Returns the time zone of the payment's organization.
CREATE FUNCTION fc_topup_tz(p payments) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT o.timezone FROM organizations o
                      WHERE o.id = p.org_id), 'Europe/Moscow')
$$;


-- Returns the delivery object of an outbox row as the payment shows it.
CREATE FUNCTION fc_topup_delivery_json(o outbox, tz text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('kind', o.kind,
                              'state', o.state,
                              'attempts', o.attempts,
                              'last_error', o.last_error,
                              'done_at', fc_cab_time(o.done_at, tz))
$$;


-- Returns the payment object of docs/topup.md ("payment_get"): receipt
-- is null until a receipt is due, then its delivery state ('pending',
-- 'done', 'dead') with the fiscal attributes once the cash register
-- reported them; deliveries lists every outbox row of the payment.
CREATE FUNCTION fc_topup_payment_json(p payments) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tz          text := fc_topup_tz(p);
    receipt     jsonb;
    deliveries  jsonb;
BEGIN
    SELECT jsonb_build_object(
               'status', o.state,
               'fn_number', p.fn_number,
               'fiscal_document_number', p.fiscal_document_number,
               'fiscal_document_attribute', p.fiscal_document_attribute,
               'receipt_datetime', p.receipt_datetime,
               'ecr_registration_number', p.ecr_registration_number,
               'fiscal_receipt_number', p.fiscal_receipt_number,
               'shift_number', p.shift_number,
               'ofd_receipt_url', p.ofd_receipt_url)
      INTO receipt
      FROM outbox o
     WHERE o.payment_id = p.id AND o.kind = 'receipt';

    SELECT coalesce(jsonb_agg(fc_topup_delivery_json(o, tz) ORDER BY o.id),
                    '[]')
      INTO deliveries
      FROM outbox o
     WHERE o.payment_id = p.id;

    RETURN jsonb_build_object(
               'id', p.id,
               'order_id', p.order_id,
               'contract_id', p.contract_id,
               'amount', p.amount,
               'email', p.email,
               'status', p.status,
               'bank_payment_id', p.bank_payment_id,
               'payment_url', p.payment_url,
               'refunded_amount', p.refunded_amount,
               'pan', p.pan,
               'rrn', p.rrn,
               'approval_code', p.approval_code,
               'created_at', fc_cab_time(p.created_at, tz),
               'confirmed_at', fc_cab_time(p.confirmed_at, tz),
               'receipt', receipt,
               'deliveries', deliveries);
END
$$;


-- Returns the outbox row as the back office lists it, times in tz.
CREATE FUNCTION fc_topup_outbox_json(o outbox, tz text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'id', o.id,
               'kind', o.kind,
               'payment_id', o.payment_id,
               'order_id', (SELECT p.order_id FROM payments p
                             WHERE p.id = o.payment_id),
               'idempotency_key', o.idempotency_key,
               'state', o.state,
               'attempts', o.attempts,
               'next_attempt_at', fc_cab_time(o.next_attempt_at, tz),
               'last_error', o.last_error,
               'created_at', fc_cab_time(o.created_at, tz),
               'done_at', fc_cab_time(o.done_at, tz),
               'payload', o.payload,
               'result', o.result)
$$;


-- ---------------------------------------------------------------------
-- The outbox: writing rows
--
-- Rows are written in the transaction of the route that decided them,
-- so a delivery exists exactly when its cause is committed, and
-- NOTIFY fc_outbox (delivered at commit, once per transaction) wakes
-- the daemon.  next_attempt_at is the real clock, never the test
-- clock: the daemon compares it with now().
--
-- Payload times are Moscow time, the time of the company's books and
-- of its cash register.
-- ---------------------------------------------------------------------

-- Adds an outbox row of kind for payment p with payload, under key
-- (NULL: 'crm:<row id>'), and wakes the daemon.  Returns the row id.
CREATE FUNCTION fc_topup_outbox_add(kind text, p payments, payload jsonb,
                                    key text, at timestamptz)
    RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id  bigint := nextval(pg_get_serial_sequence('outbox', 'id'));
BEGIN
    INSERT INTO outbox (id, kind, payment_id, idempotency_key, payload,
                        created_at, next_attempt_at)
    VALUES (id, kind, p.id, coalesce(key, kind || ':' || id), payload,
            at, now());

    PERFORM pg_notify('fc_outbox', '');

    RETURN id;
END
$$;


-- Adds the CRM record of what just happened to p (its new status).
-- Besides the fields the daemon relies on, it carries the bank's
-- PaymentId and the total refunded so far.
CREATE FUNCTION fc_topup_outbox_crm(p payments, at timestamptz)
    RETURNS void
LANGUAGE sql AS $$
    SELECT fc_topup_outbox_add('crm', p, jsonb_build_object(
               'payment_id', p.id,
               'order_id', p.order_id,
               'contract_number', k.number,
               'org_inn', o.inn,
               'amount', p.amount,
               'status', p.status,
               'event_at', fc_cab_time(at, 'Europe/Moscow'),
               'pan', p.pan,
               'email', p.email,
               'bank_payment_id', p.bank_payment_id,
               'refunded_amount', p.refunded_amount), NULL, at)
      FROM contracts k
      JOIN organizations o ON o.id = k.org_id
     WHERE k.id = p.contract_id;
$$;


-- Adds the receipt of the advance and the 1C document of a payment
-- confirmed at `at`.
CREATE FUNCTION fc_topup_outbox_confirmed(p payments, at timestamptz)
    RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k       contracts;
    o       organizations;
    msk     timestamp := at AT TIME ZONE 'Europe/Moscow';
    ref     uuid := gen_random_uuid();
BEGIN
    SELECT * INTO STRICT k FROM contracts WHERE id = p.contract_id;
    SELECT * INTO STRICT o FROM organizations WHERE id = k.org_id;

    PERFORM fc_topup_outbox_add('receipt', p, jsonb_build_object(
                'external_id', 'receipt:' || p.id,
                'email', p.email,
                'amount', p.amount,
                'payment_date', to_char(msk, 'YYYY-MM-DD'),
                'item_name', 'Аванс по договору ' || k.number,
                'timestamp', to_char(msk, 'DD.MM.YYYY HH24:MI:SS')),
            'receipt:' || p.id, at);

    PERFORM fc_topup_outbox_add('onec', p, jsonb_build_object(
                'ref_key', ref,
                'date', to_char(msk, 'YYYY-MM-DD"T"HH24:MI:SS'),
                'amount', p.amount,
                'contract_number', k.number,
                'org_inn', o.inn,
                'org_name', o.name,
                'payment_id', p.id,
                'order_id', p.order_id,
                'bank_payment_id', p.bank_payment_id),
            ref::text, at);
END
$$;


-- ---------------------------------------------------------------------
-- Creating a payment
-- ---------------------------------------------------------------------

-- Returns the answer that asks nginx to call the bank's Init for p and
-- to continue in topup_init_result.  nginx adds TerminalKey and Token.
CREATE FUNCTION fc_topup_init_step(p payments) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'status', 201,
               'bank', jsonb_build_object(
                   'method', 'Init',
                   'request', jsonb_build_object(
                       'Amount', p.amount,
                       'OrderId', p.order_id,
                       'Description', 'Пополнение договора ' || k.number,
                       'NotificationURL', fc_topup_public_url()
                                          || '/bank/v1/tbank/notification',
                       'SuccessURL', fc_topup_public_url()
                                     || '/topup/success',
                       'DATA', jsonb_build_object('Email', p.email)),
                   'then', 'topup_init_result',
                   'state', jsonb_build_object('payment_id', p.id)))
      FROM contracts k
     WHERE k.id = p.contract_id
$$;


-- POST /api/v1/contracts/{id}/topups {"amount", "email"} with an
-- optional Idempotency-Key header: an owner or accountant starts a
-- top-up of a contract of their organization.  Returns the bank step
-- (status 201, "bank": Init) for a new payment.  The same key again
-- with the same contract, amount and e-mail returns that payment: 200
-- with the payment object once it has a payment URL or has ended, else
-- the bank step again (the bank answers the same OrderId with the same
-- PaymentId); with anything different it is 409 conflict.
CREATE FUNCTION fc_route_topup_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at      timestamptz := fc_now(req);
    u       users := fc_session_user(req);
    k       contracts;
    body    jsonb;
    amount  bigint;
    email   text;
    ikey    text := req ->> 'idempotency_key';
    id      bigint;
    p       payments;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'accountant');
    k := fc_contract_of(u, fc_path_id(req, 0));

    body := fc_cab_body(req);
    PERFORM fc_cab_known_fields(body, ARRAY['amount', 'email']);

    amount := fc_arg_number(body, 'amount',
                            fc_topup_meta_int('topup_min', 10000),
                            fc_topup_meta_int('topup_max', 100000000));

    email := btrim(fc_arg_text(body, 'email', 254));
    IF NOT fc_topup_email_valid(email) THEN
        RETURN fc_error(422, 'validation_failed', format(
            'email: must be an e-mail address like name@example.com, '
            'got %s', fc_cab_quote(body -> 'email')));
    END IF;

    IF ikey IS NOT NULL AND ikey !~ '^[\x21-\x7e]{1,255}$' THEN
        RETURN fc_error(422, 'validation_failed', format(
            'Idempotency-Key: must be 1 to 255 visible ASCII characters, '
            'got %s', fc_cab_quote(to_jsonb(ikey))));
    END IF;

    id := nextval(pg_get_serial_sequence('payments', 'id'));

    -- a concurrent request with the same key waits here for the first
    -- one to commit, then finds its payment below
    INSERT INTO payments (id, order_id, contract_id, org_id, user_id,
                          amount, email, idempotency_key, created_at,
                          updated_at)
    VALUES (id,
            format('FC-%s-%s', id,
                   left(replace(gen_random_uuid()::text, '-', ''), 6)),
            k.id, k.org_id, u.id, amount, email, ikey, at, at)
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING * INTO p;

    IF p.id IS NULL THEN
        SELECT * INTO STRICT p
          FROM payments
         WHERE user_id = u.id AND idempotency_key = ikey
           FOR UPDATE;

        IF p.contract_id <> k.id OR p.amount <> amount
           OR p.email <> email
        THEN
            RETURN fc_error(409, 'conflict', format(
                'Idempotency-Key %s was already used for another top-up '
                '(payment %s)', fc_cab_quote(to_jsonb(ikey)), p.id));
        END IF;

        IF p.payment_url IS NOT NULL OR p.status <> 'NEW' THEN
            RETURN fc_ok(200, fc_topup_payment_json(p));
        END IF;

        RETURN fc_topup_init_step(p);
    END IF;

    PERFORM fc_audit(u, 'topup_create', 'payment', p.id::text, req,
                     jsonb_build_object('contract_id', k.id,
                                        'amount', amount,
                                        'order_id', p.order_id));

    RETURN fc_topup_init_step(p);
END
$$;


-- Called by nginx (never through HTTP) with the bank's answer to Init:
-- req.bank is its JSON (or null), req.bank_status its HTTP status (0
-- when nginx got none), req.state the payment.  Success with PaymentId
-- and PaymentURL: 201 with the payment object.  Success false: the
-- payment is REJECTED with the bank's reason (the CRM hears of it) and
-- the answer is 502 bank_declined.  No usable answer: the payment
-- stays NEW without URL, to be tried again under the same
-- Idempotency-Key, and the answer is 503 bank_unavailable.
CREATE FUNCTION fc_route_topup_init_result(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at       timestamptz := fc_now(req);
    bank     jsonb := req -> 'bank';
    code     int;
    u        users;
    p        payments;
    pid      text;
    url      text;
    message  text;
BEGIN
    -- only nginx adds bank_status, after it called the bank
    IF req IS NULL OR jsonb_typeof(req -> 'bank_status') IS DISTINCT FROM
                      'number'
    THEN
        RETURN fc_error(404, 'not_found', 'no such route');
    END IF;

    u := fc_session_user(req);
    code := fc_topup_int(req -> 'bank_status');

    SELECT * INTO p
      FROM payments
     WHERE id = fc_topup_int(req #> '{state,payment_id}')
       AND user_id = u.id
       FOR UPDATE;

    IF p.id IS NULL THEN
        RETURN fc_error(404, 'not_found', 'no such payment');
    END IF;

    IF jsonb_typeof(bank) IS DISTINCT FROM 'object'
       OR code IS NULL OR code = 0 OR code >= 500
       OR jsonb_typeof(bank -> 'Success') IS DISTINCT FROM 'boolean'
    THEN
        RETURN fc_error(503, 'bank_unavailable',
                        'the bank did not answer; try again with the same '
                        'Idempotency-Key');
    END IF;

    -- two retries under one key may both have called Init: an answer
    -- that already gave the payment its URL stands, and a payment
    -- already refused gets none
    IF NOT (bank -> 'Success')::boolean AND p.payment_url IS NOT NULL THEN
        RETURN fc_ok(201, fc_topup_payment_json(p));
    END IF;

    IF NOT (bank -> 'Success')::boolean OR p.status = 'REJECTED' THEN
        message := coalesce(fc_topup_text(bank -> 'Message', 200),
                            p.error_message, 'no reason given');

        IF p.status = 'NEW' THEN
            UPDATE payments
               SET status = 'REJECTED',
                   error_code = fc_topup_text(bank -> 'ErrorCode', 32),
                   error_message = left(message || coalesce(
                       ': ' || fc_topup_text(bank -> 'Details', 300), ''),
                       500),
                   updated_at = at
             WHERE id = p.id
            RETURNING * INTO p;

            PERFORM fc_topup_outbox_crm(p, at);
        END IF;

        RETURN fc_error(502, 'bank_declined', format(
            'the bank declined the payment: %s (code %s)', message,
            coalesce(fc_topup_text(bank -> 'ErrorCode', 32), p.error_code,
                     'none')));
    END IF;

    pid := fc_topup_text(bank -> 'PaymentId', 64);
    url := fc_topup_text(bank -> 'PaymentURL', 2000);

    IF pid IS NULL OR url IS NULL THEN
        RETURN fc_error(503, 'bank_unavailable',
                        'the bank answered without PaymentId or PaymentURL; '
                        'try again with the same Idempotency-Key');
    END IF;

    -- a notification may have told us the PaymentId first
    IF p.bank_payment_id IS DISTINCT FROM pid
       AND (p.bank_payment_id IS NOT NULL
            OR EXISTS (SELECT 1 FROM payments o
                        WHERE o.bank_payment_id = pid))
    THEN
        RETURN fc_error(502, 'bank_error', format(
            'the bank answered PaymentId %s, which does not belong to '
            'payment %s', fc_cab_quote(to_jsonb(pid)), p.id));
    END IF;

    UPDATE payments
       SET bank_payment_id = pid,
           payment_url = coalesce(payment_url, url),
           updated_at = at
     WHERE id = p.id
    RETURNING * INTO p;

    RETURN fc_ok(201, fc_topup_payment_json(p));
END
$$;


-- ---------------------------------------------------------------------
-- The bank's notifications
--
-- nginx checked the Token before anything here runs.  A notification
-- is then checked against our own order: the OrderId must be ours, the
-- TerminalKey the one nginx signs with, the PaymentId the one Init gave
-- (or, if Init's answer was lost, none yet: the first notification
-- tells it), and the Amount the order's amount.  A notification that
-- fails a check is an anomaly: recorded and counted, never applied.
--
-- Money.  A payment is credited once, when it first reaches CONFIRMED
-- or any later status: ledger 'topup' with ref = PaymentId, whose
-- unique (kind, ref) holds even against two transactions.  A refund
-- notification before CONFIRMED (the bank does not keep order) proves
-- the payment was confirmed, so the credit, receipt and 1C document
-- come first, then the refund.
--
-- Refunds.  The bank sends PARTIAL_REFUNDED or REFUNDED with Amount =
-- what that operation refunded.  refunded_amount keeps the running
-- total, and each refund is one 'topup_refund' entry of the difference,
-- ref = PaymentId || ':refund:' || the new total.  REFUNDED means the
-- whole amount went back, so it takes the total to the payment's amount
-- whatever the operation's Amount.  A refund beyond the amount is an
-- anomaly.  A refund notification that repeats the status and Amount of
-- one already applied is a duplicate: the bank's retries are common,
-- and two genuine partial refunds of equal amounts cannot be told from
-- a retry by their contents.  The cost of that choice is a missed
-- second equal partial refund: the client keeps money until the final
-- REFUNDED or the registry reconciliation puts it right; the other
-- choice would debit the client twice for every retry.  Missing: a
-- refund gets no receipt of its own (54-FZ wants a sell_refund of the
-- advance); the outbox has no kind for it yet.
--
-- Success false with a status other than a refusal (a failed refund
-- attempt reported as CONFIRMED, say) contradicts itself: an anomaly.
-- ---------------------------------------------------------------------

-- Credits payment p (locked by the caller) when it is confirmed at
-- `at`: the ledger, the receipt and the 1C document, confirmed_at.
-- Returns the payment as it now is.
CREATE FUNCTION fc_topup_credit(p payments, at timestamptz)
    RETURNS payments
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger (contract_id, amount, kind, ref, description,
                        created_at)
    VALUES (p.contract_id, p.amount, 'topup', p.bank_payment_id,
            'card top-up ' || p.order_id, at)
    ON CONFLICT (kind, ref) DO NOTHING;

    UPDATE payments
       SET confirmed_at = coalesce(confirmed_at, at),
           updated_at = at
     WHERE id = p.id
    RETURNING * INTO p;

    PERFORM fc_topup_outbox_confirmed(p, at);

    RETURN p;
END
$$;


-- Lifts a block for lack of money from the contract when its balance
-- and credit now cover its holds.  Returns whether it did.
CREATE FUNCTION fc_topup_unblock(p payments, req jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    k  contracts;
BEGIN
    UPDATE contracts c
       SET status = 'active',
           blocked_reason = NULL
     WHERE c.id = p.contract_id
       AND c.status = 'blocked'
       AND c.blocked_reason = 'funds'
       AND coalesce((SELECT b.balance FROM contract_balances b
                      WHERE b.contract_id = c.id), 0)
           + c.credit_limit - fc_contract_holds(c.id) >= 0
    RETURNING * INTO k;

    IF k.id IS NULL THEN
        RETURN false;
    END IF;

    INSERT INTO audit_log (at, user_id, org_id, action, object_type,
                           object_id, ip, details)
    VALUES (fc_now(req), NULL, k.org_id, 'contract_unblock', 'contract',
            k.id::text, req ->> 'ip',
            jsonb_build_object('reason', 'funds', 'payment_id', p.id));

    RETURN true;
END
$$;


-- POST /bank/v1/tbank/notification: applies a notification nginx has
-- verified (req.token_ok, req.terminal_key) as described above, in one
-- transaction with its event, ledger entries and outbox rows.  Answers
-- 200 "OK" whatever the outcome, so that the bank stops retrying, with
-- the Redis commands for a changed balance (balance.lua) and a lifted
-- block; 403 when nginx did not verify it.
CREATE FUNCTION fc_route_bank_notification(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    at         timestamptz := fc_now(req);
    n          jsonb := req -> 'body';
    bstatus    text;
    target     text;
    pid        text;
    amt        bigint;
    success    boolean;
    p          payments;
    cur        text;
    outcome    text;
    reason     text;
    total      bigint;
    moved      boolean := false;
    unblocked  boolean := false;
    b          contract_balances;
    cmds       jsonb := '[]';
BEGIN
    IF req IS NULL OR req -> 'token_ok' IS DISTINCT FROM 'true'::jsonb THEN
        RETURN fc_error(403, 'forbidden',
                        'the notification was not verified');
    END IF;

    IF jsonb_typeof(n) IS DISTINCT FROM 'object' THEN
        RETURN fc_error(422, 'validation_failed',
                        'body: must be a JSON object');
    END IF;

    IF jsonb_typeof(n -> 'Pan') = 'string' THEN
        n := jsonb_set(n, '{Pan}', to_jsonb(fc_topup_mask_pan(n ->> 'Pan')));
    END IF;

    bstatus := fc_topup_text(n -> 'Status', 64);
    target := fc_topup_target(bstatus);
    pid := fc_topup_text(n -> 'PaymentId', 64);
    amt := fc_topup_int(n -> 'Amount');
    success := CASE WHEN n -> 'Success' IN ('true', '"true"') THEN true
                    WHEN n -> 'Success' IN ('false', '"false"') THEN false
               END;

    SELECT * INTO p
      FROM payments
     WHERE order_id = fc_topup_text(n -> 'OrderId', 64)
       FOR UPDATE;
    cur := p.status;

    -- who it is about
    IF p.id IS NULL THEN
        reason := 'unknown_order';
    ELSIF n ->> 'TerminalKey' IS DISTINCT FROM req ->> 'terminal_key' THEN
        reason := 'terminal_mismatch';
    ELSIF pid IS NULL THEN
        reason := 'payment_id_missing';
    ELSIF p.bank_payment_id IS DISTINCT FROM pid
          AND (p.bank_payment_id IS NOT NULL
               OR EXISTS (SELECT 1 FROM payments o
                           WHERE o.bank_payment_id = pid))
    THEN
        reason := 'payment_id_mismatch';
    END IF;

    -- what it says
    IF reason IS NOT NULL THEN
        NULL;
    ELSIF target IS NULL THEN
        outcome := 'unknown';
    ELSIF success IS FALSE AND target <> 'REJECTED' THEN
        reason := 'unsuccessful_' || lower(bstatus);
    ELSIF target IN ('AUTHORIZED', 'CONFIRMED', 'REJECTED')
          AND amt IS DISTINCT FROM p.amount
    THEN
        reason := 'amount_mismatch';
    ELSIF target IN ('PARTIAL_REFUNDED', 'REFUNDED')
          AND (amt IS NULL OR amt <= 0)
    THEN
        reason := 'amount_mismatch';
    END IF;

    -- where it leads
    IF reason IS NOT NULL OR outcome IS NOT NULL THEN
        NULL;

    ELSIF target = 'REJECTED' THEN
        outcome := CASE WHEN cur = 'REJECTED' THEN 'duplicate'
                        WHEN cur IN ('NEW', 'AUTHORIZED') THEN 'applied'
                        ELSE 'stale' END;

    ELSIF cur = 'REJECTED' THEN
        -- money taken for a payment the bank refused: somebody must look
        IF target = 'AUTHORIZED' THEN
            outcome := 'stale';
        ELSE
            reason := lower(target) || '_after_rejected';
        END IF;

    ELSIF target IN ('AUTHORIZED', 'CONFIRMED') THEN
        outcome := CASE WHEN target = cur THEN 'duplicate'
                        WHEN fc_topup_rank(target) < fc_topup_rank(cur)
                        THEN 'stale'
                        ELSE 'applied' END;

    ELSIF cur = 'REFUNDED' THEN
        outcome := CASE target WHEN 'REFUNDED' THEN 'duplicate'
                               ELSE 'stale' END;

    ELSIF EXISTS (SELECT 1 FROM payment_events e
                   WHERE e.payment_id = p.id
                     AND e.outcome = 'applied'
                     AND e.bank_status = bstatus
                     AND e.amount = amt)
    THEN
        outcome := 'duplicate';

    ELSIF p.refunded_amount + amt > p.amount THEN
        reason := 'refund_exceeds_amount';

    ELSE
        outcome := 'applied';
    END IF;

    IF reason IS NOT NULL THEN
        outcome := 'anomaly';
    END IF;

    -- the card data and the PaymentId of any notification that is about
    -- this payment, also a late one: the registry is matched on them
    IF outcome IN ('applied', 'stale', 'duplicate', 'unknown') THEN
        UPDATE payments
           SET bank_payment_id = pid,
               pan = coalesce(pan, fc_topup_text(n -> 'Pan', 32)),
               rrn = coalesce(rrn, fc_topup_text(n -> 'RRN', 32),
                              fc_topup_text(n -> 'Rrn', 32)),
               approval_code = coalesce(approval_code,
                                        fc_topup_text(n -> 'ApprovalCode',
                                                      16),
                                        fc_topup_text(n -> 'AuthCode', 16))
         WHERE id = p.id
        RETURNING * INTO p;
    END IF;

    IF outcome = 'applied' THEN
        IF target = 'REJECTED' THEN
            UPDATE payments
               SET status = 'REJECTED',
                   error_code = fc_topup_text(n -> 'ErrorCode', 32),
                   error_message = fc_topup_text(n -> 'Message', 500),
                   updated_at = at
             WHERE id = p.id
            RETURNING * INTO p;
            PERFORM fc_topup_outbox_crm(p, at);

        ELSE
            IF fc_topup_rank(cur) < 2 AND fc_topup_rank(target) >= 2 THEN
                UPDATE payments SET status = 'CONFIRMED' WHERE id = p.id
                RETURNING * INTO p;
                p := fc_topup_credit(p, at);
                PERFORM fc_topup_outbox_crm(p, at);
                moved := true;
            END IF;

            IF target IN ('PARTIAL_REFUNDED', 'REFUNDED') THEN
                total := CASE WHEN target = 'REFUNDED' THEN p.amount
                              ELSE p.refunded_amount + amt END;

                IF total > p.refunded_amount THEN
                    INSERT INTO ledger (contract_id, amount, kind, ref,
                                        description, created_at)
                    VALUES (p.contract_id, -(total - p.refunded_amount),
                            'topup_refund',
                            p.bank_payment_id || ':refund:' || total,
                            'card top-up refund ' || p.order_id, at)
                    ON CONFLICT (kind, ref) DO NOTHING;
                    moved := moved OR FOUND;
                END IF;

                UPDATE payments
                   SET status = CASE WHEN total = p.amount THEN 'REFUNDED'
                                     ELSE 'PARTIAL_REFUNDED' END,
                       refunded_amount = total,
                       updated_at = at
                 WHERE id = p.id
                RETURNING * INTO p;
                PERFORM fc_topup_outbox_crm(p, at);

            ELSIF target = 'AUTHORIZED' THEN
                UPDATE payments SET status = 'AUTHORIZED', updated_at = at
                 WHERE id = p.id;
            END IF;
        END IF;

        IF moved THEN
            unblocked := fc_topup_unblock(p, req);

            SELECT * INTO b FROM contract_balances
             WHERE contract_id = p.contract_id;
            cmds := jsonb_build_array(jsonb_build_array(
                        'SCRIPT', 'balance', 1,
                        format('{c:%s}:ctr', p.contract_id),
                        b.balance, b.version));

            IF unblocked THEN
                cmds := cmds || jsonb_build_array(jsonb_build_array(
                            'HSET', format('{c:%s}:ctr', p.contract_id),
                            'status', 'active'));
            END IF;
        END IF;
    END IF;

    INSERT INTO payment_events (payment_id, order_id, bank_payment_id,
                                bank_status, amount, outcome, reason, body,
                                received_at)
    VALUES (p.id, fc_topup_text(n -> 'OrderId', 64), pid, bstatus, amt,
            outcome, reason, n, at);

    RETURN fc_cab_with_redis(jsonb_build_object('status', 200,
                                                'text', 'OK'),
                             cmds);
END
$$;


-- ---------------------------------------------------------------------
-- Reading payments
-- ---------------------------------------------------------------------

-- GET /api/v1/payments/{id}: one payment of the organization (owner,
-- manager, accountant); 404 for another organization's.
CREATE FUNCTION fc_route_payment_get(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u  users := fc_session_user(req);
    p  payments;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant');

    SELECT * INTO p
      FROM payments
     WHERE id = fc_path_id(req, 0) AND org_id = u.org_id;

    IF p.id IS NULL THEN
        RETURN fc_error(404, 'not_found', 'no such payment');
    END IF;

    RETURN fc_ok(200, fc_topup_payment_json(p));
END
$$;


-- GET /api/v1/payments?contract_id=&limit=&cursor=: the payments of
-- the organization, or of one of its contracts, newest first.
CREATE FUNCTION fc_route_payments_list(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u          users := fc_session_user(req);
    q          jsonb := fc_cab_query(req);
    size       int;
    before     bigint;
    contract_  bigint;
    items      jsonb;
BEGIN
    PERFORM fc_require_role(u, 'owner', 'manager', 'accountant');
    size := fc_cab_page_size(req);
    before := nullif(fc_cab_cursor_id(req), 0);

    contract_ := fc_arg_int(q, 'contract_id', 1, NULL, false);
    IF contract_ IS NOT NULL THEN
        PERFORM fc_contract_of(u, contract_);
    END IF;

    SELECT coalesce(jsonb_agg(fc_topup_payment_json(p) ORDER BY p.id DESC),
                    '[]')
      INTO items
      FROM (SELECT *
              FROM payments pp
             WHERE pp.org_id = u.org_id
               AND (contract_ IS NULL OR pp.contract_id = contract_)
               AND (before IS NULL OR pp.id < before)
             ORDER BY pp.id DESC
             LIMIT size + 1) p;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- ---------------------------------------------------------------------
-- The back office: the outbox
-- ---------------------------------------------------------------------

-- GET /api/v1/backoffice/outbox?state=dead|pending|done&limit=&cursor=
-- (operators only): outbox rows, all states when none is given, newest
-- first.
CREATE FUNCTION fc_route_backoffice_outbox(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    q       jsonb := fc_cab_query(req);
    tz      text;
    size    int;
    before  bigint;
    state_  text;
    items   jsonb;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    tz := fc_cab_tz(u);
    size := fc_cab_page_size(req);
    before := nullif(fc_cab_cursor_id(req), 0);
    state_ := fc_cab_arg_enum(q, 'state',
                              ARRAY['dead', 'pending', 'done'], false);

    SELECT coalesce(jsonb_agg(fc_topup_outbox_json(o, tz) ORDER BY o.id DESC),
                    '[]')
      INTO items
      FROM (SELECT *
              FROM outbox ob
             WHERE (state_ IS NULL OR ob.state = state_)
               AND (before IS NULL OR ob.id < before)
             ORDER BY ob.id DESC
             LIMIT size + 1) o;

    RETURN fc_ok(200, fc_cab_page(items, size));
END
$$;


-- POST /api/v1/backoffice/outbox/{id}/retry (operators only): a dead or
-- pending row is due again now.  Its attempts are kept: a dead row gets
-- one more attempt and is dead again if that fails, so that a retry
-- against a receiver still down ends quickly.  409 for a delivered row
-- or one the daemon is delivering right now.
CREATE FUNCTION fc_route_backoffice_outbox_retry(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u       users := fc_session_user(req);
    row_id  bigint;
    o       outbox;
    before  text;
BEGIN
    PERFORM fc_require_role(u, 'operator');
    row_id := fc_path_id(req, 0);

    BEGIN
        SELECT * INTO o FROM outbox WHERE id = row_id FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN fc_error(409, 'conflict', format(
            'outbox row %s is being delivered right now', row_id));
    END;

    IF o.id IS NULL THEN
        RETURN fc_error(404, 'not_found', 'no such outbox row');
    END IF;

    IF o.state = 'done' THEN
        RETURN fc_error(409, 'conflict', format(
            'outbox row %s was already delivered', row_id));
    END IF;

    before := o.state;

    UPDATE outbox
       SET state = 'pending',
           next_attempt_at = now()
     WHERE id = o.id
    RETURNING * INTO o;

    PERFORM pg_notify('fc_outbox', '');

    PERFORM fc_audit(u, 'outbox_retry', 'outbox', o.id::text, req,
                     jsonb_build_object('kind', o.kind,
                                        'payment_id', o.payment_id,
                                        'state', before,
                                        'attempts', o.attempts));

    RETURN fc_ok(200, fc_topup_outbox_json(o, fc_cab_tz(u)));
END
$$;


-- ---------------------------------------------------------------------
-- The daemon's side of the outbox
--
-- Per row, in one transaction of its own: fc_outbox_next() claims a due
-- row (FOR UPDATE SKIP LOCKED: several daemons never take the same
-- row), the daemon delivers it, then fc_outbox_done() or
-- fc_outbox_failed() records the attempt, and COMMIT.  A daemon killed
-- mid-delivery aborts the transaction: the row is due again, and the
-- receiver's idempotency key makes the second delivery harmless.
--
-- Retry schedule: after the n-th failed attempt the row waits
-- base * 2^(n-1), at most max, times a random factor in [0.5, 1.0]
-- (so that rows that failed together do not come back together);
-- base 2 s and max 600 s unless the daemon passes its own (tests
-- compress time that way).  It is dead once it has failed max_attempts
-- times.
-- ---------------------------------------------------------------------

-- Returns one due pending row, locked until the end of the transaction,
-- oldest due first; no row when none is due or all due rows are being
-- delivered by others.
CREATE FUNCTION fc_outbox_next() RETURNS SETOF outbox
LANGUAGE sql AS $$
    SELECT *
      FROM outbox
     WHERE state = 'pending'
       AND next_attempt_at <= now()
     ORDER BY next_attempt_at, id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
$$;


-- Records a delivered row: state 'done' with the receiver's result.
-- For a receipt the result is ATOL's report (the whole report or its
-- "payload"), whose fiscal attributes are stored on the payment; a
-- field that is missing or of the wrong type is left empty rather than
-- failing the delivery that has happened.  Returns 'done', or NULL
-- when the row is not pending (nothing changes).
CREATE FUNCTION fc_outbox_done(id bigint, result jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    o  outbox;
    r  jsonb;
BEGIN
    UPDATE outbox
       SET state = 'done',
           attempts = attempts + 1,
           result = fc_outbox_done.result,
           last_error = NULL,
           done_at = now()
     WHERE outbox.id = fc_outbox_done.id
       AND state = 'pending'
    RETURNING * INTO o;

    IF o.id IS NULL THEN
        RETURN NULL;
    END IF;

    IF o.kind = 'receipt' AND jsonb_typeof(result) = 'object' THEN
        r := CASE WHEN jsonb_typeof(result -> 'payload') = 'object'
                  THEN result -> 'payload' ELSE result END;

        UPDATE payments
           SET fn_number = fc_topup_text(r -> 'fn_number', 32),
               fiscal_document_number =
                   fc_topup_int(r -> 'fiscal_document_number'),
               fiscal_document_attribute =
                   fc_topup_int(r -> 'fiscal_document_attribute'),
               receipt_datetime = fc_topup_text(r -> 'receipt_datetime', 32),
               ecr_registration_number =
                   fc_topup_text(r -> 'ecr_registration_number', 32),
               fiscal_receipt_number =
                   fc_topup_int(r -> 'fiscal_receipt_number'),
               shift_number = fc_topup_int(r -> 'shift_number'),
               ofd_receipt_url = fc_topup_text(r -> 'ofd_receipt_url', 500),
               updated_at = now()
         WHERE payments.id = o.payment_id;
    END IF;

    RETURN 'done';
END
$$;


-- Records a failed attempt (error: what went wrong, without secrets;
-- kept to 2000 characters).  Returns the row's new state, 'pending'
-- (with its next attempt scheduled) or 'dead', or NULL when the row is
-- not pending (nothing changes).
CREATE FUNCTION fc_outbox_failed(id bigint, error text, max_attempts int,
                                 backoff_ms bigint DEFAULT 2000,
                                 backoff_max_ms bigint DEFAULT 600000)
    RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    o      outbox;
    delay  bigint;
BEGIN
    SELECT * INTO o
      FROM outbox
     WHERE outbox.id = fc_outbox_failed.id
       AND state = 'pending'
       FOR UPDATE;

    IF o.id IS NULL THEN
        RETURN NULL;
    END IF;

    -- milliseconds; the exponent is capped so the power cannot overflow
    delay := least(greatest(backoff_ms, 1)::numeric
                   * power(2::numeric, least(o.attempts, 40)),
                   greatest(backoff_max_ms, 1))::bigint;
    delay := delay * (500 + floor(random() * 501)::bigint) / 1000;

    UPDATE outbox
       SET attempts = attempts + 1,
           last_error = left(coalesce(error, 'unknown error'), 2000),
           state = CASE WHEN attempts + 1 >= greatest(coalesce(max_attempts,
                                                               12), 1)
                        THEN 'dead' ELSE 'pending' END,
           next_attempt_at = now() + delay * interval '1 millisecond'
     WHERE outbox.id = o.id
    RETURNING * INTO o;

    RETURN o.state;
END
$$;


-- ---------------------------------------------------------------------
-- Metrics
-- ---------------------------------------------------------------------

-- Returns Prometheus text lines for the gauges nginx cannot count:
-- outbox rows by kind and state, anomalous notifications received so
-- far, payments by status.  Every combination is written, zeros too,
-- so that a series never disappears.
CREATE FUNCTION fc_metrics_text() RETURNS text
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
$$;

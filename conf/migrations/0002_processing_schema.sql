-- The processing data model: organizations, contracts and their ledger,
-- cards, products, stations, terminals, users, limits and the terminal
-- operations.  PostgreSQL is the system of record; Redis only mirrors
-- what is here (see docs/processing.md).
--
-- Units: money is bigint kopecks, volume bigint millilitres, prices
-- bigint kopecks per litre (fuel) or per item (goods and services).

CREATE TABLE organizations (
    id              bigserial   PRIMARY KEY,
    inn             text        NOT NULL UNIQUE
                                CHECK (inn ~ '^([0-9]{10}|[0-9]{12})$'),
    kpp             text        CHECK (kpp ~ '^[0-9]{4}[0-9A-Z]{2}[0-9]{3}$'),
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
    timezone        text        NOT NULL DEFAULT 'Europe/Moscow',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contracts (
    id              bigserial   PRIMARY KEY,
    org_id          bigint      NOT NULL REFERENCES organizations,
    number          text        NOT NULL UNIQUE,
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'blocked')),
    -- why it is blocked: 'funds' is lifted by a top-up that covers the
    -- debt, 'manual' only by the operator
    blocked_reason  text        CHECK (blocked_reason IN ('funds', 'manual')),
    credit_limit    bigint      NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    low_balance     bigint      NOT NULL DEFAULT 0 CHECK (low_balance >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX contracts_org_idx ON contracts (org_id);

-- Every money movement of a contract, never updated or deleted.  The
-- balance is the sum of the entries; contract_balances caches it with a
-- version that grows with each entry, so that Redis can take a newer
-- balance and ignore an older one arriving late.
CREATE TABLE ledger (
    id              bigserial   PRIMARY KEY,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    amount          bigint      NOT NULL CHECK (amount <> 0),
    kind            text        NOT NULL CHECK (kind IN ('topup', 'purchase',
                                'refund', 'topup_refund', 'adjustment',
                                'opening')),
    -- what caused it, unique per kind: a bank payment id, an auth id
    ref             text        NOT NULL,
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);

CREATE INDEX ledger_contract_idx ON ledger (contract_id, created_at);

CREATE TABLE contract_balances (
    contract_id     bigint      PRIMARY KEY REFERENCES contracts,
    balance         bigint      NOT NULL DEFAULT 0,
    version         bigint      NOT NULL DEFAULT 0
);

CREATE FUNCTION fc_ledger_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'the ledger is append-only'
            USING ERRCODE = 'FC409';
    END IF;

    INSERT INTO contract_balances AS b (contract_id, balance, version)
    VALUES (NEW.contract_id, NEW.amount, 1)
    ON CONFLICT (contract_id) DO UPDATE
        SET balance = b.balance + EXCLUDED.balance,
            version = b.version + 1;

    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_append AFTER INSERT OR UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION fc_ledger_append();

CREATE TABLE products (
    code            text        PRIMARY KEY,
    name            text        NOT NULL,
    grp             text        NOT NULL CHECK (grp IN ('fuel', 'goods',
                                                        'services')),
    unit            text        NOT NULL CHECK (unit IN ('l', 'pcs'))
);

CREATE TABLE stations (
    id              bigserial   PRIMARY KEY,
    code            text        NOT NULL UNIQUE,
    name            text        NOT NULL,
    own             boolean     NOT NULL,
    network         text        NOT NULL,
    address         text        NOT NULL,
    region          text        NOT NULL,
    highway         text,
    -- coordinates are geography, not money: plain degrees
    lat             double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon             double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    services        text[]      NOT NULL DEFAULT '{}'
);

CREATE INDEX stations_lat_lon_idx ON stations (lat, lon);

CREATE TABLE station_prices (
    station_id      bigint      NOT NULL REFERENCES stations,
    product_code    text        NOT NULL REFERENCES products,
    price           bigint      NOT NULL CHECK (price > 0),
    effective_from  date        NOT NULL,
    PRIMARY KEY (station_id, product_code, effective_from)
);

CREATE TABLE terminals (
    id              text        PRIMARY KEY,
    station_id      bigint      NOT NULL REFERENCES stations,
    -- lowercase hex SHA-256 of the bearer key; the key is never stored
    key_hash        text        NOT NULL UNIQUE,
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'disabled')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id              bigserial   PRIMARY KEY,
    org_id          bigint      REFERENCES organizations,
    email           text        NOT NULL UNIQUE,
    name            text        NOT NULL,
    role            text        NOT NULL CHECK (role IN ('owner', 'manager',
                                'accountant', 'driver', 'operator')),
    password_hash   text        NOT NULL,
    failed_logins   integer     NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'operator') = (org_id IS NULL))
);

CREATE TABLE card_groups (
    id              bigserial   PRIMARY KEY,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    name            text        NOT NULL,
    UNIQUE (contract_id, name)
);

CREATE TABLE cards (
    id              bigserial   PRIMARY KEY,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    group_id        bigint      REFERENCES card_groups,
    -- HMAC-SHA256 of the PAN with the platform's pan_key, lowercase hex:
    -- the full number is never stored
    pan_hash        text        NOT NULL UNIQUE,
    pan_masked      text        NOT NULL,
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'blocked',
                                                  'lost', 'expired')),
    expires         date        NOT NULL,
    driver_name     text,
    driver_user_id  bigint      REFERENCES users,
    vehicle_plate   text,
    tank_capacity_ml bigint     CHECK (tank_capacity_ml > 0),
    -- fuel products the card may buy; empty means any
    allowed_fuel    text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cards_contract_idx ON cards (contract_id, id);
CREATE INDEX cards_driver_idx ON cards (driver_user_id);

-- A limit or restriction on a card, a card group or a whole contract.
-- kind amount/volume/count: a quantity per period (value in kopecks,
-- millilitres or transactions); kind time: a weekday mask and a window;
-- kind geo: allowed or denied stations, networks and regions.
CREATE TABLE limits (
    id              bigserial   PRIMARY KEY,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    scope           text        NOT NULL CHECK (scope IN ('contract',
                                                          'group', 'card')),
    group_id        bigint      REFERENCES card_groups,
    card_id         bigint      REFERENCES cards,
    product_scope   text        NOT NULL DEFAULT 'all'
                                CHECK (product_scope IN ('all', 'group',
                                                         'product')),
    product_group   text        CHECK (product_group IN ('fuel', 'goods',
                                                         'services')),
    product_code    text        REFERENCES products,
    kind            text        NOT NULL CHECK (kind IN ('amount', 'volume',
                                                'count', 'time', 'geo')),
    period          text        CHECK (period IN ('txn', 'day', 'week',
                                'month', 'quarter', 'year', 'once')),
    value           bigint      CHECK (value >= 0),
    -- bit 0 Monday .. bit 6 Sunday
    weekdays        smallint    CHECK (weekdays BETWEEN 0 AND 127),
    -- minutes after local midnight, [time_from, time_to)
    time_from       smallint    CHECK (time_from BETWEEN 0 AND 1440),
    time_to         smallint    CHECK (time_to BETWEEN 0 AND 1440),
    geo_mode        text        CHECK (geo_mode IN ('allow', 'deny')),
    station_ids     bigint[]    NOT NULL DEFAULT '{}',
    networks        text[]      NOT NULL DEFAULT '{}',
    regions         text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'group') = (group_id IS NOT NULL)),
    CHECK ((scope = 'card') = (card_id IS NOT NULL)),
    CHECK ((product_scope = 'group') = (product_group IS NOT NULL)),
    CHECK ((product_scope = 'product') = (product_code IS NOT NULL)),
    CHECK (kind NOT IN ('amount', 'volume', 'count')
           OR (period IS NOT NULL AND value IS NOT NULL)),
    CHECK (kind <> 'time' OR (weekdays IS NOT NULL
                              AND time_from IS NOT NULL
                              AND time_to IS NOT NULL)),
    CHECK (kind <> 'geo' OR geo_mode IS NOT NULL)
);

CREATE INDEX limits_contract_idx ON limits (contract_id);

-- One row per authorization: the decision and what became of it.
CREATE TABLE pos_auths (
    auth_id         uuid        PRIMARY KEY,
    terminal_id     text        NOT NULL REFERENCES terminals,
    terminal_txn_id text        NOT NULL,
    station_id      bigint      NOT NULL REFERENCES stations,
    card_id         bigint      REFERENCES cards,
    contract_id     bigint      REFERENCES contracts,
    pan_masked      text        NOT NULL,
    product_code    text        NOT NULL,
    unit_price      bigint      NOT NULL,
    requested_volume_ml bigint,
    requested_amount bigint,
    status          text        NOT NULL CHECK (status IN ('approved',
                                'partial', 'declined')),
    decline_code    text,
    limit_id        bigint,
    approved_volume_ml bigint   NOT NULL DEFAULT 0,
    approved_amount bigint      NOT NULL DEFAULT 0,
    -- state of the hold: held until completed, reversed or expired
    state           text        NOT NULL CHECK (state IN ('held',
                                'completed', 'reversed', 'expired',
                                'declined')),
    completed_volume_ml bigint,
    completed_amount bigint,
    refunded_volume_ml bigint   NOT NULL DEFAULT 0,
    refunded_amount bigint      NOT NULL DEFAULT 0,
    -- the limit counters this authorization used, as the Lua script
    -- reported them: [{"k": counter key suffix, "u": unit}, ...]
    usage           jsonb       NOT NULL DEFAULT '[]',
    response        jsonb       NOT NULL,
    authorized_at   timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    settled_at      timestamptz,
    UNIQUE (terminal_id, terminal_txn_id)
);

CREATE INDEX pos_auths_contract_idx ON pos_auths (contract_id,
                                                  authorized_at);
CREATE INDEX pos_auths_card_idx ON pos_auths (card_id, authorized_at);
CREATE INDEX pos_auths_held_idx ON pos_auths (expires_at)
    WHERE state = 'held';

-- Completions, reversals and refunds, each idempotent on the terminal's
-- own id; a retry returns the stored response.
CREATE TABLE pos_operations (
    id              bigserial   PRIMARY KEY,
    terminal_id     text        NOT NULL REFERENCES terminals,
    terminal_txn_id text        NOT NULL,
    auth_id         uuid        NOT NULL REFERENCES pos_auths,
    kind            text        NOT NULL CHECK (kind IN ('complete',
                                                'reverse', 'refund')),
    volume_ml       bigint      NOT NULL DEFAULT 0,
    amount          bigint      NOT NULL DEFAULT 0,
    response        jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (terminal_id, terminal_txn_id)
);

CREATE INDEX pos_operations_auth_idx ON pos_operations (auth_id);

-- The transactions a client sees: a sale on completion, a refund, each
-- with a commit order for incremental exports.
CREATE TABLE transactions (
    id              bigserial   PRIMARY KEY,
    contract_id     bigint      NOT NULL REFERENCES contracts,
    card_id         bigint      NOT NULL REFERENCES cards,
    auth_id         uuid        NOT NULL REFERENCES pos_auths,
    kind            text        NOT NULL CHECK (kind IN ('sale', 'refund')),
    station_id      bigint      NOT NULL REFERENCES stations,
    product_code    text        NOT NULL REFERENCES products,
    volume_ml       bigint      NOT NULL,
    unit_price      bigint      NOT NULL,
    amount          bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX transactions_contract_idx ON transactions (contract_id,
                                                        created_at, id);
CREATE INDEX transactions_card_idx ON transactions (card_id, created_at);

CREATE TABLE sessions (
    token_hash      text        PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users,
    csrf_hash       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);

CREATE TABLE mobile_tokens (
    id              bigserial   PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users,
    access_hash     text        NOT NULL UNIQUE,
    refresh_hash    text        NOT NULL UNIQUE,
    access_expires  timestamptz NOT NULL,
    refresh_expires timestamptz NOT NULL,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    user_id         bigint      REFERENCES users,
    org_id          bigint      REFERENCES organizations,
    action          text        NOT NULL,
    object_type     text,
    object_id       text,
    ip              text,
    details         jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_org_idx ON audit_log (org_id, at);

-- Foundation of the schema.
--
-- Roles: the database and every object in it belong to the migration
-- owner, the role scripts/migrate connects as (the cluster's `fc`
-- superuser in the local stack, reached only through the unix socket).
-- The application role `fc_app` logs in over TCP with a password and
-- may read and write rows, never change the schema: whatever a later
-- migration creates in schema public is granted to it by the default
-- privileges set here, so migrations need no GRANT of their own.
--
-- scripts/migrate runs this file in one transaction and has already
-- created schema_migrations.

DO $$
BEGIN
    -- the stack creates fc_app with its password first; a bare cluster
    -- (a scratch database in tests, say) gets a role without a login
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fc_app') THEN
        CREATE ROLE fc_app NOLOGIN;
    END IF;

    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC',
                   current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO fc_app',
                   current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO fc_app;

ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO fc_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO fc_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO fc_app;

-- the application may check which schema version it runs against
GRANT SELECT ON schema_migrations TO fc_app;

-- Facts about this database that the services read at start:
-- instance_id tells two databases apart (a restored copy keeps it,
-- a new cluster gets a new one).
CREATE TABLE fc_meta (
    key         text        PRIMARY KEY,
    value       text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO fc_meta (key, value)
VALUES ('instance_id', gen_random_uuid()::text);

"""The foundation: the stack comes up whole, answers /health and
/ready, keeps its services private, and its migrations runner refuses a
history that no longer matches the files.

Stopping leaves no process behind: test_stop_leaves_no_process proves
it on a throwaway stack of its own (PostgreSQL and Redis on free ports
under $FC_VAR/scratch), and scripts/test checks it again for the main
test stack after its final stop.
"""

import grp
import hashlib
import os
import shutil
import socket
import stat

import pytest

import fc


# ---------------------------------------------------------------------
# HTTP

def test_health_answers_ok(client):
    r = client.get("/health")
    assert r.status == 200, r
    assert r.content_type == "application/json", r
    assert r.json() == {"status": "ok"}


def test_health_matches_openapi(client, openapi):
    openapi(client.get("/health"), "/health")


def test_ready_when_postgres_and_redis_answer(client):
    r = client.get("/ready")
    assert r.status == 200, r
    assert r.json()["status"] == "ready"


def test_unknown_path_is_a_json_404(client):
    r = client.get("/no/such/resource")
    assert r.status == 404, r
    assert r.content_type == "application/json", r
    error = r.json()["error"]
    assert error["code"] == "not_found"
    assert isinstance(error["message"], str) and error["message"]


# ---------------------------------------------------------------------
# scripts/stack

def test_status_lists_every_service_up():
    p = fc.stack("status")
    states = dict(line.split()[:2] for line in p.stdout.splitlines())
    assert states == {"postgres": "up", "redis": "up", "bank": "up",
                      "atol": "up", "crm": "up", "onec": "up",
                      "daemon": "up", "nginx": "up"}, p.stdout


def test_env_describes_the_running_stack(stack_env):
    printed = fc.parse_env(fc.stack("env").stdout)
    for name, value in stack_env.items():
        assert printed.get(name) == value, name

    port = printed["FC_PG_PORT"]
    password = printed["FC_PG_PASSWORD"]
    assert printed["FC_PG_DSN"] == \
        f"postgresql://fc_app:{password}@127.0.0.1:{port}/fc"
    assert printed["FC_URL"] == f"http://127.0.0.1:{printed['FC_HTTP_PORT']}"
    assert printed["FC_PG_USER"] == "fc_app"
    assert printed["FC_REDIS_HOST"] == printed["FC_PG_HOST"] == "127.0.0.1"


def test_env_appends_env_d_files(stack_env):
    path = os.path.join(stack_env["FC_VAR"], "env.d", "zz_probe.env")
    with open(path, "w") as f:
        f.write("FC_PROBE_LOGIN=probe@example.org\n")
    try:
        printed = fc.parse_env(fc.stack("env").stdout)
        assert printed["FC_PROBE_LOGIN"] == "probe@example.org"
    finally:
        os.unlink(path)


@pytest.mark.parametrize("name", ["pg_password", "redis_password",
                                  "pan_key"])
def test_secrets_are_private(stack_env, name):
    path = os.path.join(stack_env["FC_VAR"], "secrets", name)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == 0
    assert grp.getgrgid(st.st_gid).gr_name == "fc"
    with open(path) as f:
        value = f.read().strip()
    assert len(value) == 64 and int(value, 16) >= 0


def test_no_secret_in_service_command_lines(stack_env):
    secrets = [stack_env["FC_PG_PASSWORD"], stack_env["FC_REDIS_PASSWORD"]]
    for pid, cmd in fc.stack_processes(stack_env["FC_VAR"]):
        for s in secrets:
            assert s not in cmd, f"pid {pid} shows a password"


# ---------------------------------------------------------------------
# PostgreSQL and Redis

def test_application_role_reads_rows_but_not_the_schema(pg):
    import psycopg2

    with pg.cursor() as cur:
        cur.execute("SELECT value FROM fc_meta WHERE key = 'instance_id'")
        assert len(cur.fetchone()[0]) == 36
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone()[0] >= 1
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TABLE fc_probe (id int)")


def test_application_role_needs_its_password(stack_env):
    import psycopg2

    dsn = stack_env["FC_PG_DSN"].replace(stack_env["FC_PG_PASSWORD"],
                                         "0" * 64)
    with pytest.raises(psycopg2.OperationalError):
        fc.pg_connect(dsn).close()


def test_redis_refuses_clients_without_the_password(redis):
    import redis as redis_py

    anonymous = fc.redis_client(password=False)
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    assert redis.ping() is True


def test_redis_keeps_an_append_only_file(redis):
    assert redis.config_get("appendonly")["appendonly"] == "yes"
    assert redis.config_get("appendfsync")["appendfsync"] == "everysec"


def test_redis_outage_shows_in_status_and_ready(client):
    with fc.outage("redis"):
        p = fc.stack("status", check=False)
        assert p.returncode == 1
        assert "redis      down" in p.stdout
        r = client.get("/ready")
        assert r.status == 503, r
        assert r.json()["error"]["code"] == "not_ready"
        assert client.get("/health").status == 200
    fc.wait_for(lambda: client.get("/ready").status == 200, timeout=15,
                what="/ready to answer 200 after Redis is back")


# ---------------------------------------------------------------------
# scripts/migrate

@pytest.fixture
def scratch_db():
    name = f"fc_scratch_{os.getpid()}"
    fc.pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                dbname="postgres")
    fc.pg_admin(f"CREATE DATABASE {name} OWNER fc", dbname="postgres")
    yield name
    fc.pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                dbname="postgres")


@pytest.fixture
def migrations_copy(tmp_path):
    d = tmp_path / "migrations"
    shutil.copytree(os.path.join(fc.ROOT, "conf", "migrations"), d)
    return d


def test_migrate_applies_in_order_and_records_checksums(scratch_db,
                                                        migrations_copy):
    p = fc.migrate(dbname=scratch_db, directory=str(migrations_copy))
    assert p.returncode == 0, p.stderr

    rows = fc.pg_admin("SELECT version, name, checksum FROM "
                       "schema_migrations ORDER BY version",
                       dbname=scratch_db).split()
    files = sorted(f for f in os.listdir(migrations_copy)
                   if f.endswith(".sql"))
    assert len(rows) == len(files)
    for row, name in zip(rows, files):
        version, stem, checksum = row.split("|")
        assert name == f"{int(version):04d}_{stem}.sql"
        with open(migrations_copy / name, "rb") as f:
            assert checksum == hashlib.sha256(f.read()).hexdigest()

    again = fc.migrate(dbname=scratch_db, directory=str(migrations_copy))
    assert again.returncode == 0, again.stderr
    assert "0 applied" in again.stdout


def test_migrate_refuses_an_edited_migration(scratch_db, migrations_copy):
    assert fc.migrate(dbname=scratch_db,
                      directory=str(migrations_copy)).returncode == 0

    with open(migrations_copy / "0001_foundation.sql", "a") as f:
        f.write("\n-- edited after it was applied\n")
    (migrations_copy / "9999_probe.sql").write_text(
        "CREATE TABLE fc_probe (id int);\n")

    p = fc.migrate(dbname=scratch_db, directory=str(migrations_copy))
    assert p.returncode == 1
    assert "0001_foundation.sql" in p.stderr
    assert "changed" in p.stderr
    # nothing at all was applied, not even the new file
    assert fc.pg_admin("SELECT to_regclass('fc_probe')",
                       dbname=scratch_db).strip() == ""

    status = fc.migrate("--status", dbname=scratch_db,
                        directory=str(migrations_copy))
    assert status.returncode == 1
    assert "CHANGED" in status.stdout
    assert "pending" in status.stdout


def test_migrate_refuses_a_missing_migration(scratch_db, migrations_copy):
    assert fc.migrate(dbname=scratch_db,
                      directory=str(migrations_copy)).returncode == 0
    os.unlink(migrations_copy / "0001_foundation.sql")

    p = fc.migrate(dbname=scratch_db, directory=str(migrations_copy))
    assert p.returncode == 1
    assert "0001_foundation.sql" in p.stderr
    assert "missing" in p.stderr


def test_migrate_rolls_back_a_failing_migration(scratch_db,
                                                migrations_copy):
    (migrations_copy / "9998_half.sql").write_text(
        "CREATE TABLE fc_half (id int);\nSELECT no_such_function();\n")

    p = fc.migrate(dbname=scratch_db, directory=str(migrations_copy))
    assert p.returncode == 1
    assert "9998_half.sql" in p.stderr
    assert fc.pg_admin("SELECT to_regclass('fc_half')",
                       dbname=scratch_db).strip() == ""
    assert fc.pg_admin("SELECT count(*) FROM schema_migrations "
                       "WHERE version = 9998", dbname=scratch_db).strip() \
        == "0"


# ---------------------------------------------------------------------
# stop leaves nothing behind

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_stop_leaves_no_process(stack_env):
    var = os.path.join(stack_env["FC_VAR"], "scratch", f"s{os.getpid()}")
    http_port, pg_port, redis_port = free_ports(3)
    own = {"FC_VAR": var, "FC_HTTP_PORT": str(http_port),
           "FC_PG_PORT": str(pg_port), "FC_REDIS_PORT": str(redis_port)}
    try:
        fc.stack("start", "postgres", extra_env=own)
        fc.stack("start", "redis", extra_env=own)
        running = fc.stack_processes(var)
        assert len(running) >= 2, running

        fc.stack("stop", extra_env=own)
        assert fc.stack_processes(var) == []
        p = fc.stack("status", check=False, extra_env=own)
        assert p.returncode == 1
        assert " up " not in p.stdout
    finally:
        fc.stack("destroy", check=False, extra_env=own)
        shutil.rmtree(var, ignore_errors=True)

/*
 * fcd's configuration file: values, defaults, errors that name the line
 * and the bad value, the shipped template, and the release script the
 * daemon reads from the path the file names.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "fcd.h"


#define MINIMAL                                                           \
    "pg_host = 127.0.0.1\n"                                               \
    "pg_dbname = fuelcards\n"                                             \
    "pg_user = fcd\n"                                                     \
    "redis_host = 127.0.0.1\n"                                            \
    "release_script = /srv/fc/conf/lua/release.lua\n"

/* the first line after MINIMAL */
#define NEXT  ":6:"

/* the template, relative to core/, where make test runs the tests */
#define TEMPLATE  "../conf/fcd.conf"


static char  conf_path[64];
static char  pw_path[64];
static char  pw2_path[64];


static void
write_file(const char *path, const char *text)
{
    FILE  *f;

    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}


static int
setup(void **state)
{
    int  fd;

    (void) state;

    snprintf(conf_path, sizeof(conf_path), "/tmp/fc-test-conf-XXXXXX");
    snprintf(pw_path, sizeof(pw_path), "/tmp/fc-test-pw-XXXXXX");

    fd = mkstemp(conf_path);

    if (fd == -1) {
        return -1;
    }

    close(fd);

    fd = mkstemp(pw_path);

    if (fd == -1) {
        return -1;
    }

    close(fd);

    snprintf(pw2_path, sizeof(pw2_path), "/tmp/fc-test-pw2-XXXXXX");
    fd = mkstemp(pw2_path);

    if (fd == -1) {
        return -1;
    }

    close(fd);

    return 0;
}


static int
teardown(void **state)
{
    (void) state;

    unlink(conf_path);
    unlink(pw_path);
    unlink(pw2_path);

    return 0;
}


/* loads text as the configuration; returns the error text or NULL */
static const char *
load(const char *text, fcd_conf_t *conf)
{
    static char  err[FCD_ERR_LEN];

    write_file(conf_path, text);
    err[0] = '\0';

    return fcd_conf_load(conf_path, conf, err, sizeof(err)) == 0 ? NULL
                                                                 : err;
}


static void
expect_error(const char *text, const char *where, const char *what)
{
    char         loc[128];
    fcd_conf_t   conf;
    const char  *err;

    err = load(text, &conf);

    if (err == NULL) {
        fail_msg("accepted: %s", text);
    }

    snprintf(loc, sizeof(loc), "%s%s", conf_path, where);

    if (strncmp(err, loc, strlen(loc)) != 0 || strstr(err, what) == NULL) {
        fail_msg("error \"%s\", expected \"%s\" and \"%s\"", err, loc, what);
    }

    assert_string_equal(conf.pg_password, "");
    assert_string_equal(conf.redis_password, "");
    assert_string_equal(conf.atol_password, "");
    assert_string_equal(conf.onec_password, "");
}


static void
test_minimal_file_takes_defaults(void **state)
{
    fcd_conf_t  conf;

    (void) state;

    assert_null(load(MINIMAL, &conf));
    assert_string_equal(conf.pg_host, "127.0.0.1");
    assert_true(conf.pg_host_is_addr);
    assert_int_equal(conf.pg_port, 5432);
    assert_string_equal(conf.pg_dbname, "fuelcards");
    assert_string_equal(conf.pg_user, "fcd");
    assert_string_equal(conf.pg_password, "");
    assert_string_equal(conf.redis_host, "127.0.0.1");
    assert_true(conf.redis_host_is_addr);
    assert_int_equal(conf.redis_port, 6379);
    assert_string_equal(conf.redis_password, "");
    assert_string_equal(conf.release_script, "/srv/fc/conf/lua/release.lua");
    assert_string_equal(conf.log_file, "");
    assert_string_equal(conf.pid_file, "");
    assert_int_equal(conf.log_level, FC_LOG_INFO);
    assert_int_equal(conf.tick_interval_ms, 1000);
    assert_int_equal(conf.vat.n, 0);

    /* the outbox: nothing to deliver to, the documented timings */
    assert_string_equal(conf.atol_url, "");
    assert_string_equal(conf.atol_password, "");
    assert_string_equal(conf.crm_url, "");
    assert_string_equal(conf.onec_url, "");
    assert_string_equal(conf.onec_password, "");
    assert_string_equal(conf.onec_document,
                        "ПоступлениеОплатыПо"
                        "ПлатежнойКарте");
    assert_int_equal(conf.outbox_max_attempts, 12);
    assert_int_equal(conf.outbox_backoff_ms, 2000);
    assert_int_equal(conf.outbox_backoff_max_ms, 600000);
    assert_int_equal(conf.report_poll_ms, 500);
    assert_int_equal(conf.report_poll_max, 20);
}


static void
test_outbox_keys(void **state)
{
    char        text[2048];
    fcd_conf_t  conf, other;

    (void) state;

    write_file(pw_path, "atol pw\n");
    write_file(pw2_path, "onec pw\n");

    snprintf(text, sizeof(text), MINIMAL
             "atol_url = https://127.0.0.1:8443/possystem/v4//\n"
             "atol_login = fc-demo\n"
             "atol_password_file = %s\n"
             "atol_group = fc-demo-group\n"
             "company_inn = 7736050003\n"
             "company_sno = usn_income\n"
             "company_email = receipts@fuelcard.example\n"
             "company_payment_address = https://cabinet.fuelcard.example\n"
             "report_poll_ms = 10\n"
             "report_poll_max = 3\n"
             "crm_url = http://127.0.0.1:9000/\n"
             "onec_url = http://[::1]:9001/base\n"
             "onec_user = fc-exchange\n"
             "onec_password_file = %s\n"
             "onec_document = Поступление\n"
             "outbox_max_attempts = 3\n"
             "outbox_backoff_ms = 10\n"
             "outbox_backoff_max_ms = 40\n", pw_path, pw2_path);

    assert_null(load(text, &conf));
    assert_string_equal(conf.atol_url, "https://127.0.0.1:8443/possystem/v4");
    assert_string_equal(conf.atol_login, "fc-demo");
    assert_string_equal(conf.atol_password, "atol pw");
    assert_string_equal(conf.atol_group, "fc-demo-group");
    assert_string_equal(conf.company_inn, "7736050003");
    assert_string_equal(conf.company_sno, "usn_income");
    assert_string_equal(conf.company_email, "receipts@fuelcard.example");
    assert_string_equal(conf.company_payment_address,
                        "https://cabinet.fuelcard.example");
    assert_int_equal(conf.report_poll_ms, 10);
    assert_int_equal(conf.report_poll_max, 3);
    assert_string_equal(conf.crm_url, "http://127.0.0.1:9000");
    assert_string_equal(conf.onec_url, "http://[::1]:9001/base");
    assert_string_equal(conf.onec_user, "fc-exchange");
    assert_string_equal(conf.onec_password, "onec pw");
    assert_string_equal(conf.onec_document, "Поступление");
    assert_int_equal(conf.outbox_max_attempts, 3);
    assert_int_equal(conf.outbox_backoff_ms, 10);
    assert_int_equal(conf.outbox_backoff_max_ms, 40);

    /* a new cash register password means a new token */
    assert_null(load(MINIMAL, &other));
    assert_true(fcd_conf_atol_changed(&conf, &other));
    assert_false(fcd_conf_atol_changed(&conf, &conf));
    assert_false(fcd_conf_pg_changed(&conf, &other));

    fcd_conf_clear(&conf);
    assert_string_equal(conf.atol_password, "");
    assert_string_equal(conf.onec_password, "");
}


static void
test_outbox_key_errors(void **state)
{
    char  text[512];

    (void) state;

    expect_error(MINIMAL "crm_url = ftp://127.0.0.1/\n", NEXT,
                 "crm_url \"ftp://127.0.0.1/\" is not an http");
    expect_error(MINIMAL "crm_url = 127.0.0.1:9000\n", NEXT,
                 "is not an http:// or https:// URL");
    expect_error(MINIMAL "crm_url = http://\n", NEXT, "is not an http");
    expect_error(MINIMAL "onec_url = http:///\n", NEXT,
                 "onec_url has no host");
    expect_error(MINIMAL "onec_url = http://u:secret@127.0.0.1/\n", NEXT,
                 "onec_url must not hold credentials");
    expect_error(MINIMAL "atol_url = http://127.0.0.1/a b\n", NEXT,
                 "contains a blank");
    expect_error(MINIMAL "company_inn = 7736050004\n", NEXT,
                 "company_inn \"7736050004\" is not a valid INN");
    expect_error(MINIMAL "company_inn = 77360500\n", NEXT,
                 "is not a valid INN");
    expect_error(MINIMAL "company_sno = usn\n", NEXT,
                 "invalid company_sno \"usn\"");
    expect_error(MINIMAL "outbox_max_attempts = 0\n", NEXT,
                 "invalid outbox_max_attempts \"0\", expected 1..1000");
    expect_error(MINIMAL "report_poll_max = 1001\n", NEXT,
                 "invalid report_poll_max \"1001\"");
    expect_error(MINIMAL "report_poll_ms = 5\n", NEXT,
                 "invalid report_poll_ms \"5\"");
    expect_error(MINIMAL "outbox_backoff_ms = 5000\n"
                 "outbox_backoff_max_ms = 4000\n", ":",
                 "outbox_backoff_max_ms 4000 is less than "
                 "outbox_backoff_ms 5000");

    /* the passwords of the services are read like the others */
    snprintf(text, sizeof(text), MINIMAL "atol_password_file = %s-gone\n",
             pw_path);
    expect_error(text, NEXT, "cannot open atol_password_file");

    write_file(pw2_path, "\n");
    snprintf(text, sizeof(text), MINIMAL "onec_password_file = %s\n",
             pw2_path);
    expect_error(text, NEXT, "onec_password_file");
    expect_error(text, NEXT, "is empty");
}


static void
test_full_file_with_comments_and_blanks(void **state)
{
    char        text[1024];
    fcd_conf_t  conf;

    (void) state;

    write_file(pw_path, "s3cret#pw\nsecond line is ignored\n");
    write_file(pw2_path, "redis pw\n");

    snprintf(text, sizeof(text),
             "# fcd test configuration\n"
             "\n"
             "   pg_host=/var/run/postgresql   \n"
             "pg_port = 25500\r\n"
             "\tpg_dbname\t=\tfc db\n"
             "pg_user = fcd\n"
             "pg_password_file = %s\n"
             "redis_host = /var/run/redis/redis.sock\n"
             "redis_port = 16379\n"
             "redis_password_file = %s\n"
             "release_script = /srv/fc #2/release.lua\n"
             "log_file = /tmp/fc #1.log\n"
             "log_level = debug\n"
             "pid_file = /tmp/fcd.pid\n"
             "tick_interval_ms = 250\n"
             "vat = 2019-01-01 20 20/120 vat120\n"
             "vat = 2026-01-01 22 22/122 vat122\n", pw_path, pw2_path);

    assert_null(load(text, &conf));
    assert_string_equal(conf.pg_host, "/var/run/postgresql");
    assert_false(conf.pg_host_is_addr);
    assert_int_equal(conf.pg_port, 25500);
    assert_string_equal(conf.pg_dbname, "fc db");
    assert_string_equal(conf.pg_password, "s3cret#pw");
    assert_string_equal(conf.redis_host, "/var/run/redis/redis.sock");
    assert_false(conf.redis_host_is_addr);
    assert_int_equal(conf.redis_port, 16379);
    assert_string_equal(conf.redis_password, "redis pw");
    assert_string_equal(conf.release_script, "/srv/fc #2/release.lua");
    assert_string_equal(conf.log_file, "/tmp/fc #1.log");
    assert_int_equal(conf.log_level, FC_LOG_DEBUG);
    assert_string_equal(conf.pid_file, "/tmp/fcd.pid");
    assert_int_equal(conf.tick_interval_ms, 250);
    assert_int_equal(conf.vat.n, 2);
    assert_string_equal(conf.vat.rates[1].code, "vat122");

    fcd_conf_clear(&conf);
    assert_string_equal(conf.pg_password, "");
    assert_string_equal(conf.redis_password, "");
}


static void
test_ipv6_host_and_crlf_password(void **state)
{
    char        text[512];
    fcd_conf_t  conf;

    (void) state;

    write_file(pw_path, "pw\r\n");
    snprintf(text, sizeof(text), "pg_host = ::1\npg_dbname = d\n"
             "pg_user = u\npg_password_file = %s\nredis_host = ::1\n"
             "release_script = r.lua\n", pw_path);

    assert_null(load(text, &conf));
    assert_true(conf.pg_host_is_addr);
    assert_true(conf.redis_host_is_addr);
    assert_string_equal(conf.pg_password, "pw");
}


static void
test_errors_name_line_and_value(void **state)
{
    (void) state;

    expect_error(MINIMAL "pg_hots = x\n", NEXT, "unknown key \"pg_hots\"");
    expect_error(MINIMAL "pg_port = 70000\n", NEXT, "\"70000\"");
    expect_error(MINIMAL "pg_port = 54x2\n", NEXT, "\"54x2\"");
    expect_error(MINIMAL "pg_port = -1\n", NEXT, "\"-1\"");
    expect_error(MINIMAL "tick_interval_ms = 5\n", NEXT, "\"5\"");
    expect_error(MINIMAL "tick_interval_ms = 99999999999\n", NEXT,
                 "99999999999");
    expect_error(MINIMAL "log_level = loud\n", NEXT, "\"loud\"");
    expect_error(MINIMAL "vat = 2026-01-01 22 20/120 vat122\n", NEXT,
                 "20/120");
    expect_error("pg_host = db.example.com\n", ":1:",
                 "\"db.example.com\" is neither");
    expect_error(MINIMAL "pg_user = other\n", NEXT,
                 "duplicate key \"pg_user\", first set on line 3");
    expect_error(MINIMAL "log_file =\n", NEXT, "has no value");
    expect_error(MINIMAL "just words\n", NEXT, "expected \"key = value\"");
    expect_error(MINIMAL "= value\n", NEXT, "expected \"key = value\"");
    expect_error(MINIMAL "log_file = a\x01" "b\n", NEXT, "control");
    expect_error(MINIMAL "redis_port = 0\n", NEXT,
                 "invalid redis_port \"0\"");
    expect_error("redis_host = redis.example.com\n", ":1:",
                 "redis_host \"redis.example.com\" is neither");
    expect_error(MINIMAL "redis_host = ::1\n", NEXT,
                 "duplicate key \"redis_host\", first set on line 4");
}


static void
test_missing_keys_and_files(void **state)
{
    char        text[512];
    fcd_conf_t  conf;
    char        err[FCD_ERR_LEN];

    (void) state;

    expect_error("pg_host = 127.0.0.1\npg_user = u\n", ":",
                 "required key \"pg_dbname\" is missing");
    expect_error("pg_host = 127.0.0.1\npg_dbname = d\npg_user = u\n"
                 "release_script = r.lua\n", ":",
                 "required key \"redis_host\" is missing");
    expect_error("pg_host = 127.0.0.1\npg_dbname = d\npg_user = u\n"
                 "redis_host = 127.0.0.1\n", ":",
                 "required key \"release_script\" is missing");

    snprintf(text, sizeof(text), MINIMAL "\n\npg_password_file = %s-gone\n",
             pw_path);
    expect_error(text, ":8:", "cannot open pg_password_file");

    write_file(pw_path, "\n");
    snprintf(text, sizeof(text), MINIMAL "pg_password_file = %s\n", pw_path);
    expect_error(text, NEXT, "pg_password_file");
    expect_error(text, NEXT, "is empty");

    snprintf(text, sizeof(text), MINIMAL "pg_password_file = /tmp\n");
    expect_error(text, NEXT, "is not a file");

    snprintf(text, sizeof(text), MINIMAL "redis_password_file = %s-gone\n",
             pw2_path);
    expect_error(text, NEXT, "cannot open redis_password_file");

    /* a good pg password is wiped when the redis one fails */
    write_file(pw_path, "pg pw\n");
    write_file(pw2_path, "");
    snprintf(text, sizeof(text), MINIMAL "pg_password_file = %s\n"
             "redis_password_file = %s\n", pw_path, pw2_path);
    expect_error(text, ":7:", "redis_password_file");
    expect_error(text, ":7:", "is empty");

    assert_int_equal(fcd_conf_load("/nonexistent/fcd.conf", &conf, err,
                                   sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/fcd.conf: cannot open"));
}


static void
test_password_is_not_quoted_in_errors(void **state)
{
    int         i;
    char        text[512], big[400];
    fcd_conf_t  conf;
    const char *err;

    (void) state;

    for (i = 0; i < (int) sizeof(big) - 2; i++) {
        big[i] = 'p';
    }

    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    write_file(pw_path, big);

    snprintf(text, sizeof(text), MINIMAL "pg_password_file = %s\n", pw_path);
    err = load(text, &conf);
    assert_non_null(err);
    assert_non_null(strstr(err, "is longer than"));
    assert_null(strstr(err, "pppp"));
    assert_string_equal(conf.pg_password, "");

    snprintf(text, sizeof(text), MINIMAL "redis_password_file = %s\n",
             pw_path);
    err = load(text, &conf);
    assert_non_null(err);
    assert_non_null(strstr(err, "is longer than"));
    assert_null(strstr(err, "pppp"));
    assert_string_equal(conf.redis_password, "");
}


static void
test_pg_changed(void **state)
{
    fcd_conf_t  a, b;

    (void) state;

    assert_null(load(MINIMAL, &a));
    assert_null(load(MINIMAL "tick_interval_ms = 50\n", &b));
    assert_false(fcd_conf_pg_changed(&a, &b));
    assert_null(load(MINIMAL "pg_port = 5433\n", &b));
    assert_true(fcd_conf_pg_changed(&a, &b));
    assert_false(fcd_conf_redis_changed(&a, &b));
}


static void
test_redis_changed(void **state)
{
    char        text[512];
    fcd_conf_t  a, b;

    (void) state;

    assert_null(load(MINIMAL, &a));
    assert_null(load(MINIMAL "tick_interval_ms = 50\n", &b));
    assert_false(fcd_conf_redis_changed(&a, &b));
    assert_null(load(MINIMAL "redis_port = 6380\n", &b));
    assert_true(fcd_conf_redis_changed(&a, &b));
    assert_false(fcd_conf_pg_changed(&a, &b));

    write_file(pw2_path, "x\n");
    snprintf(text, sizeof(text), MINIMAL "redis_password_file = %s\n",
             pw2_path);
    assert_null(load(text, &b));
    assert_true(fcd_conf_redis_changed(&a, &b));
    fcd_conf_clear(&b);
}


/*
 * Replaces the placeholders scripts/stack knows with test values, as it
 * does: @ROOT@ is the repository as seen from core/, @VAR@ is var.
 */
static void
render(const char *in, char *out, size_t size, const char *var)
{
    size_t       n, k, len;
    const char  *names[] = { "@ROOT@", "@VAR@", "@PG_PORT@", "@REDIS_PORT@",
                             "@ATOL_PORT@", "@CRM_PORT@", "@ONEC_PORT@" };
    const char  *values[] = { "..", var, "15432", "16379", "18092", "18093",
                              "18094" };

    n = 0;

    while (*in != '\0') {
        for (k = 0; k < 7; k++) {
            len = strlen(names[k]);

            if (strncmp(in, names[k], len) == 0) {
                break;
            }
        }

        if (k == 7) {
            assert_true(n < size - 1);
            out[n++] = *in++;
            continue;
        }

        assert_true(n + strlen(values[k]) < size);
        memcpy(out + n, values[k], strlen(values[k]));
        n += strlen(values[k]);
        in += len;
    }

    out[n] = '\0';

    /* what scripts/stack would call an unknown placeholder */
    for (in = out; (in = strchr(in, '@')) != NULL; in++) {
        if (in[1] >= 'A' && in[1] <= 'Z') {
            fail_msg("placeholder left in the template: %.20s", in);
        }
    }
}


static void
test_shipped_template_loads_with_redis_settings(void **state)
{
    char          var[64], path[128], tmpl[8192], text[8192];
    size_t        len;
    FILE         *f;
    fcd_conf_t    conf;
    fcd_script_t  script;
    char          err[FCD_ERR_LEN];

    (void) state;

    f = fopen(TEMPLATE, "r");

    if (f == NULL) {
        fail_msg("cannot open %s from %s: run the tests in core/",
                 TEMPLATE, getcwd(path, sizeof(path)));
    }

    len = fread(tmpl, 1, sizeof(tmpl) - 1, f);
    fclose(f);
    tmpl[len] = '\0';

    snprintf(var, sizeof(var), "/tmp/fc-test-var-XXXXXX");
    assert_non_null(mkdtemp(var));
    snprintf(path, sizeof(path), "%s/secrets", var);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/secrets/pg_password", var);
    write_file(path, "pg-secret\n");
    snprintf(path, sizeof(path), "%s/secrets/atol_password", var);
    write_file(path, "atol-secret\n");
    snprintf(path, sizeof(path), "%s/secrets/onec_password", var);
    write_file(path, "onec-secret\n");
    snprintf(path, sizeof(path), "%s/secrets/redis_password", var);
    write_file(path, "redis-secret\n");

    render(tmpl, text, sizeof(text), var);
    assert_null(load(text, &conf));

    assert_string_equal(conf.redis_host, "127.0.0.1");
    assert_true(conf.redis_host_is_addr);
    assert_int_equal(conf.redis_port, 16379);
    assert_string_equal(conf.redis_password, "redis-secret");
    assert_string_equal(conf.pg_password, "pg-secret");
    assert_int_equal(conf.pg_port, 15432);
    assert_string_equal(conf.release_script, "../conf/lua/release.lua");

    assert_string_equal(conf.atol_url,
                        "http://127.0.0.1:18092/possystem/v4");
    assert_string_equal(conf.atol_login, "fc-demo");
    assert_string_equal(conf.atol_password, "atol-secret");
    assert_string_equal(conf.atol_group, "fc-demo-group");
    assert_string_equal(conf.company_inn, "7736050003");
    assert_string_equal(conf.company_sno, "osn");
    assert_string_equal(conf.company_email, "receipts@fuelcard.example");
    assert_string_equal(conf.crm_url, "http://127.0.0.1:18093");
    assert_string_equal(conf.onec_url, "http://127.0.0.1:18094");
    assert_string_equal(conf.onec_user, "fc-exchange");
    assert_string_equal(conf.onec_password, "onec-secret");
    assert_string_equal(conf.onec_document,
                        "ПоступлениеОплатыПо"
                        "ПлатежнойКарте");
    assert_int_equal(conf.outbox_max_attempts, 12);
    assert_int_equal(conf.vat.n, 2);

    /* the script it names is there and readable */
    memset(&script, 0, sizeof(fcd_script_t));
    assert_int_equal(fcd_redis_script_load(conf.release_script, &script,
                                           err, sizeof(err)), 0);
    assert_non_null(strstr(script.text, "KEYS"));
    fcd_redis_script_free(&script);

    fcd_conf_clear(&conf);

    unlink(path);
    snprintf(path, sizeof(path), "%s/secrets/pg_password", var);
    unlink(path);
    snprintf(path, sizeof(path), "%s/secrets/atol_password", var);
    unlink(path);
    snprintf(path, sizeof(path), "%s/secrets/onec_password", var);
    unlink(path);
    snprintf(path, sizeof(path), "%s/secrets", var);
    rmdir(path);
    rmdir(var);
}


static void
test_script_sha1_is_the_one_redis_names_it_by(void **state)
{
    fcd_script_t  script;
    char          err[FCD_ERR_LEN], gone[80];

    (void) state;

    memset(&script, 0, sizeof(fcd_script_t));

    /* Redis's documentation gives this SHA1 for SCRIPT LOAD of the text */
    write_file(conf_path, "return 'hello moto'");
    assert_int_equal(fcd_redis_script_load(conf_path, &script, err,
                                           sizeof(err)), 0);
    assert_string_equal(script.sha1,
                        "232fd51614574cf0867b83d384a5e898cfd24e5a");
    assert_int_equal(script.len, 19);
    assert_string_equal(script.text, "return 'hello moto'");

    /* a failed load keeps the script that was loaded */
    snprintf(gone, sizeof(gone), "%s-gone", conf_path);
    assert_int_equal(fcd_redis_script_load(gone, &script, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_string_equal(script.text, "return 'hello moto'");

    write_file(conf_path, "");
    assert_int_equal(fcd_redis_script_load(conf_path, &script, err,
                                           sizeof(err)), -1);
    assert_non_null(strstr(err, "is not a file of 1 to"));

    assert_int_equal(fcd_redis_script_load("/tmp", &script, err,
                                           sizeof(err)), -1);
    assert_string_equal(script.sha1,
                        "232fd51614574cf0867b83d384a5e898cfd24e5a");

    fcd_redis_script_free(&script);
    assert_null(script.text);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_minimal_file_takes_defaults),
        cmocka_unit_test(test_outbox_keys),
        cmocka_unit_test(test_outbox_key_errors),
        cmocka_unit_test(test_full_file_with_comments_and_blanks),
        cmocka_unit_test(test_ipv6_host_and_crlf_password),
        cmocka_unit_test(test_errors_name_line_and_value),
        cmocka_unit_test(test_missing_keys_and_files),
        cmocka_unit_test(test_password_is_not_quoted_in_errors),
        cmocka_unit_test(test_pg_changed),
        cmocka_unit_test(test_redis_changed),
        cmocka_unit_test(test_shipped_template_loads_with_redis_settings),
        cmocka_unit_test(test_script_sha1_is_the_one_redis_names_it_by),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

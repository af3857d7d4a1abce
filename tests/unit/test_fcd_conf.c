/*
 * fcd's configuration file: values, defaults, and errors that name the
 * line and the bad value.
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
    "pg_user = fcd\n"


static char  conf_path[64];
static char  pw_path[64];


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

    return 0;
}


static int
teardown(void **state)
{
    (void) state;

    unlink(conf_path);
    unlink(pw_path);

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
    assert_string_equal(conf.log_file, "");
    assert_string_equal(conf.pid_file, "");
    assert_int_equal(conf.log_level, FC_LOG_INFO);
    assert_int_equal(conf.tick_interval_ms, 1000);
    assert_int_equal(conf.vat.n, 0);
}


static void
test_full_file_with_comments_and_blanks(void **state)
{
    char        text[1024];
    fcd_conf_t  conf;

    (void) state;

    write_file(pw_path, "s3cret#pw\nsecond line is ignored\n");

    snprintf(text, sizeof(text),
             "# fcd test configuration\n"
             "\n"
             "   pg_host=/var/run/postgresql   \n"
             "pg_port = 25500\r\n"
             "\tpg_dbname\t=\tfc db\n"
             "pg_user = fcd\n"
             "pg_password_file = %s\n"
             "log_file = /tmp/fc #1.log\n"
             "log_level = debug\n"
             "pid_file = /tmp/fcd.pid\n"
             "tick_interval_ms = 250\n"
             "vat = 2019-01-01 20 20/120 vat120\n"
             "vat = 2026-01-01 22 22/122 vat122\n", pw_path);

    assert_null(load(text, &conf));
    assert_string_equal(conf.pg_host, "/var/run/postgresql");
    assert_false(conf.pg_host_is_addr);
    assert_int_equal(conf.pg_port, 25500);
    assert_string_equal(conf.pg_dbname, "fc db");
    assert_string_equal(conf.pg_password, "s3cret#pw");
    assert_string_equal(conf.log_file, "/tmp/fc #1.log");
    assert_int_equal(conf.log_level, FC_LOG_DEBUG);
    assert_string_equal(conf.pid_file, "/tmp/fcd.pid");
    assert_int_equal(conf.tick_interval_ms, 250);
    assert_int_equal(conf.vat.n, 2);
    assert_string_equal(conf.vat.rates[1].code, "vat122");

    fcd_conf_clear(&conf);
    assert_string_equal(conf.pg_password, "");
}


static void
test_ipv6_host_and_crlf_password(void **state)
{
    char        text[256];
    fcd_conf_t  conf;

    (void) state;

    write_file(pw_path, "pw\r\n");
    snprintf(text, sizeof(text), "pg_host = ::1\npg_dbname = d\n"
             "pg_user = u\npg_password_file = %s\n", pw_path);

    assert_null(load(text, &conf));
    assert_true(conf.pg_host_is_addr);
    assert_string_equal(conf.pg_password, "pw");
}


static void
test_errors_name_line_and_value(void **state)
{
    (void) state;

    expect_error(MINIMAL "pg_hots = x\n", ":4:", "unknown key \"pg_hots\"");
    expect_error(MINIMAL "pg_port = 70000\n", ":4:", "\"70000\"");
    expect_error(MINIMAL "pg_port = 54x2\n", ":4:", "\"54x2\"");
    expect_error(MINIMAL "pg_port = -1\n", ":4:", "\"-1\"");
    expect_error(MINIMAL "tick_interval_ms = 5\n", ":4:", "\"5\"");
    expect_error(MINIMAL "tick_interval_ms = 99999999999\n", ":4:",
                 "99999999999");
    expect_error(MINIMAL "log_level = loud\n", ":4:", "\"loud\"");
    expect_error(MINIMAL "vat = 2026-01-01 22 20/120 vat122\n", ":4:",
                 "20/120");
    expect_error("pg_host = db.example.com\n", ":1:",
                 "\"db.example.com\" is neither");
    expect_error(MINIMAL "pg_user = other\n", ":4:",
                 "duplicate key \"pg_user\", first set on line 3");
    expect_error(MINIMAL "log_file =\n", ":4:", "has no value");
    expect_error(MINIMAL "just words\n", ":4:", "expected \"key = value\"");
    expect_error(MINIMAL "= value\n", ":4:", "expected \"key = value\"");
    expect_error(MINIMAL "log_file = a\x01" "b\n", ":4:", "control");
}


static void
test_missing_keys_and_files(void **state)
{
    char        text[256];
    fcd_conf_t  conf;
    char        err[FCD_ERR_LEN];

    (void) state;

    expect_error("pg_host = 127.0.0.1\npg_user = u\n", ":",
                 "required key \"pg_dbname\" is missing");

    snprintf(text, sizeof(text), MINIMAL "\n\npg_password_file = %s-gone\n",
             pw_path);
    expect_error(text, ":6:", "cannot open pg_password_file");

    write_file(pw_path, "\n");
    snprintf(text, sizeof(text), MINIMAL "pg_password_file = %s\n", pw_path);
    expect_error(text, ":4:", "is empty");

    snprintf(text, sizeof(text), MINIMAL "pg_password_file = /tmp\n");
    expect_error(text, ":4:", "is not a file");

    assert_int_equal(fcd_conf_load("/nonexistent/fcd.conf", &conf, err,
                                   sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/fcd.conf: cannot open"));
}


static void
test_password_is_not_quoted_in_errors(void **state)
{
    int         i;
    char        text[256], big[400];
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
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_minimal_file_takes_defaults),
        cmocka_unit_test(test_full_file_with_comments_and_blanks),
        cmocka_unit_test(test_ipv6_host_and_crlf_password),
        cmocka_unit_test(test_errors_name_line_and_value),
        cmocka_unit_test(test_missing_keys_and_files),
        cmocka_unit_test(test_password_is_not_quoted_in_errors),
        cmocka_unit_test(test_pg_changed),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

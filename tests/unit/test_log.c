/*
 * fc_log: line format, levels, control characters, card-number masking.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fc_log.h"


static char  path[64];


static int
setup(void **state)
{
    int  fd;

    (void) state;

    snprintf(path, sizeof(path), "/tmp/fc-test-log-XXXXXX");
    fd = mkstemp(path);

    if (fd == -1) {
        return -1;
    }

    close(fd);

    return fc_log_open(path);
}


static int
teardown(void **state)
{
    (void) state;

    fc_log_close();
    unlink(path);

    return 0;
}


/* the log so far, emptied afterwards; the caller frees it */
static char *
take_log(void)
{
    long   n;
    char  *text;
    FILE  *f;

    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);

    text = calloc(1, (size_t) n + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t) n, f), (size_t) n);
    fclose(f);

    assert_int_equal(truncate(path, 0), 0);

    return text;
}


static char *
masked(const char *in)
{
    static char  buf[256];

    snprintf(buf, sizeof(buf), "%s", in);
    fc_log_mask_pans(buf, strlen(buf));

    return buf;
}


static void
test_line_format(void **state)
{
    int    y, mo, d, h, mi, s, ms;
    long   pid;
    char   level[16], rest[64], *text;

    (void) state;

    fc_log(FC_LOG_INFO, "released %d expired holds", 3);
    text = take_log();

    assert_int_equal(sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ [%15[a-z]] "
                            "%ld: %63[^\n]", &y, &mo, &d, &h, &mi, &s, &ms,
                            level, &pid, rest), 10);
    assert_string_equal(level, "info");
    assert_int_equal(pid, (long) getpid());
    assert_string_equal(rest, "released 3 expired holds");
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);

    free(text);
}


static void
test_levels_filter(void **state)
{
    char  *text;

    (void) state;

    fc_log(FC_LOG_DEBUG, "hidden");
    fc_log_set_level(FC_LOG_DEBUG);
    fc_log(FC_LOG_DEBUG, "shown");
    fc_log_set_level(FC_LOG_ERR);
    fc_log(FC_LOG_WARN, "hidden");
    fc_log(FC_LOG_ERR, "failed");
    fc_log_set_level(FC_LOG_INFO);

    text = take_log();
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, "[debug]"));
    assert_non_null(strstr(text, "[error]"));
    free(text);
}


static void
test_level_names(void **state)
{
    fc_log_level_t  l;

    (void) state;

    assert_int_equal(fc_log_level_parse("warn", 4, &l), 0);
    assert_int_equal(l, FC_LOG_WARN);
    assert_int_equal(fc_log_level_parse("debug", 5, &l), 0);
    assert_int_equal(l, FC_LOG_DEBUG);
    assert_int_equal(fc_log_level_parse("warning", 7, &l), -1);
}


static void
test_message_cannot_forge_lines(void **state)
{
    char  *text;

    (void) state;

    fc_log(FC_LOG_WARN, "bad order id \"%s\"", "1\n2026-01-01 [error] x\r");
    text = take_log();
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
    assert_non_null(strstr(text, "\"1 2026-01-01 [error] x \""));
    free(text);
}


static void
test_long_message_is_cut(void **state)
{
    char  *big, *text;

    (void) state;

    big = malloc(FC_LOG_LINE_MAX * 2);
    assert_non_null(big);
    memset(big, 'x', FC_LOG_LINE_MAX * 2 - 1);
    big[FC_LOG_LINE_MAX * 2 - 1] = '\0';

    fc_log(FC_LOG_INFO, "%s", big);
    text = take_log();
    assert_int_equal(strlen(text), FC_LOG_LINE_MAX - 1);
    assert_memory_equal(text + strlen(text) - 4, "...\n", 4);

    free(text);
    free(big);
}


static void
test_card_numbers_are_masked_in_lines(void **state)
{
    char  *text;

    (void) state;

    fc_log(FC_LOG_INFO, "card %s declined", "7005830000001234");
    text = take_log();
    assert_null(strstr(text, "7005830000001234"));
    assert_non_null(strstr(text, "card 700583******1234 declined"));
    free(text);
}


static void
test_mask_pans(void **state)
{
    (void) state;

    assert_string_equal(masked("pan=4111111111111111;"),
                        "pan=411111******1111;");
    assert_string_equal(masked("4276 3800 1234 5678"),
                        "4276 38** **** 5678");
    assert_string_equal(masked("4276-3800-1234-5678 ok"),
                        "4276-38**-****-5678 ok");
    assert_string_equal(masked("7005831234567890126"),
                        "700583*********0126");
    assert_string_equal(masked("1234567890123"), "123456***0123");

    /* next to other digits: the plain run is still caught */
    assert_string_equal(masked("4111111111111111 2031"),
                        "411111******1111 2031");

    /* not card numbers: short ids, INNs, a 20-digit account, a date */
    assert_string_equal(masked("order 123456789012 inn 7707083893"),
                        "order 123456789012 inn 7707083893");
    assert_string_equal(masked("acct 40702810900000012345"),
                        "acct 40702810900000012345");
    assert_string_equal(masked("at 2026-12-04 10:00"),
                        "at 2026-12-04 10:00");
    assert_int_equal(fc_log_mask_pans(NULL, 0), 0);
}


static void
test_failed_open_keeps_destination(void **state)
{
    char  *text;

    (void) state;

    assert_int_equal(fc_log_open("/nonexistent-dir/fc.log"), -1);
    fc_log(FC_LOG_INFO, "still here");
    text = take_log();
    assert_non_null(strstr(text, "still here"));
    free(text);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_levels_filter),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_message_cannot_forge_lines),
        cmocka_unit_test(test_long_message_is_cut),
        cmocka_unit_test(test_card_numbers_are_masked_in_lines),
        cmocka_unit_test(test_mask_pans),
        cmocka_unit_test(test_failed_open_keeps_destination),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

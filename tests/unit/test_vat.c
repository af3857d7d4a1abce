/*
 * fc_vat: the dated VAT table and VAT out of a VAT-inclusive amount.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fc_date.h"
#include "fc_vat.h"


#define S(s)  s, strlen(s)


static fc_vat_table_t  table;


static int
setup(void **state)
{
    char  err[256];

    (void) state;

    fc_vat_table_init(&table);

    /* added out of order on purpose: the table sorts itself */
    if (fc_vat_table_add(&table, S("2026-01-01 22 22/122 vat122"), err,
                         sizeof(err)) != 0
        || fc_vat_table_add(&table, S("2019-01-01\t20  20/120   vat120"),
                            err, sizeof(err)) != 0)
    {
        return -1;
    }

    return 0;
}


static const fc_vat_rate_t *
rate_on(const char *date)
{
    int64_t  day;

    assert_int_equal(fc_date_parse(date, strlen(date), &day), 0);

    return fc_vat_find(&table, day);
}


static int64_t
vat_of(const fc_vat_rate_t *rate, int64_t amount)
{
    int64_t  vat = -1;

    assert_non_null(rate);
    assert_int_equal(fc_vat_amount(rate, amount, &vat), 0);

    return vat;
}


static void
expect_refused(const char *line, const char *message)
{
    char            err[256];
    fc_vat_table_t  t;

    fc_vat_table_init(&t);
    err[0] = '\0';

    assert_int_equal(fc_vat_table_add(&t, S(line), err, sizeof(err)), -1);

    if (strstr(err, message) == NULL) {
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", line, err, message);
    }

    assert_int_equal(t.n, 0);
}


static void
test_rate_is_chosen_by_payment_date(void **state)
{
    (void) state;

    assert_int_equal(table.n, 2);
    assert_int_equal(rate_on("2025-12-31")->rate, 20);
    assert_int_equal(rate_on("2025-12-31")->den, 120);
    assert_string_equal(rate_on("2025-12-31")->code, "vat120");
    assert_int_equal(rate_on("2026-01-01")->rate, 22);
    assert_int_equal(rate_on("2026-01-01")->num, 22);
    assert_int_equal(rate_on("2026-01-01")->den, 122);
    assert_string_equal(rate_on("2026-01-01")->code, "vat122");
    assert_int_equal(rate_on("2030-06-01")->rate, 22);
    assert_int_equal(rate_on("2019-01-01")->rate, 20);
    assert_null(rate_on("2018-12-31"));
}


static void
test_vat_amounts_round_half_up(void **state)
{
    const fc_vat_rate_t  *r22, *r20;

    (void) state;

    r22 = rate_on("2026-01-01");
    r20 = rate_on("2025-12-31");

    assert_int_equal(vat_of(r22, 1000000), 180328);     /* 10,000.00 */
    assert_int_equal(vat_of(r22, 100000), 18033);       /* 1,000.00 */
    assert_int_equal(vat_of(r20, 6000), 1000);          /* 60.00 */
    assert_int_equal(vat_of(r20, 1), 0);
    assert_int_equal(vat_of(r20, 3), 1);                /* 0.5 -> 1 */
    assert_int_equal(vat_of(r22, -100000), -18033);     /* a refund */
    assert_int_equal(vat_of(r22, 0), 0);
}


static void
test_zero_rate_and_other_codes(void **state)
{
    char            err[256];
    int64_t         vat = -1;
    fc_vat_table_t  t;

    (void) state;

    fc_vat_table_init(&t);
    assert_int_equal(fc_vat_table_add(&t, S("2025-01-01 0 0/100 vat0"), err,
                                      sizeof(err)), 0);
    assert_int_equal(fc_vat_table_add(&t, S("2025-06-01 5 5/105 vat105"),
                                      err, sizeof(err)), 0);
    assert_int_equal(fc_vat_amount(&t.rates[0], 123456, &vat), 0);
    assert_int_equal(vat, 0);
    assert_int_equal(fc_vat_amount(&t.rates[1], 10500, &vat), 0);
    assert_int_equal(vat, 500);
}


static void
test_bad_entries_are_refused_with_a_reason(void **state)
{
    (void) state;

    expect_refused("", "must read");
    expect_refused("2026-01-01 22 22/122", "must read");
    expect_refused("2026-01-01 22 22/122 vat122 extra", "more than");
    expect_refused("2026-13-01 22 22/122 vat122", "date \"2026-13-01\"");
    expect_refused("2025-02-29 22 22/122 vat122", "date \"2025-02-29\"");
    expect_refused("2026-01-01 22% 22/122 vat122", "rate \"22%\"");
    expect_refused("2026-01-01 100 100/200 vat100", "rate \"100\"");
    expect_refused("2026-01-01 22 22-122 vat122", "calculated rate");
    expect_refused("2026-01-01 22 22/0 vat122", "calculated rate");
    expect_refused("2026-01-01 22 20/120 vat122", "is not 22/(100+22)");
    expect_refused("2026-01-01 22 22/122 VAT122", "code \"VAT122\"");
    expect_refused("2026-01-01 22 22/122 vat_code_that_is_long",
                   "invalid VAT code");
}


static void
test_duplicate_date_and_full_table(void **state)
{
    int             i;
    char            err[256], line[64];
    fc_vat_table_t  t;

    (void) state;

    assert_int_equal(fc_vat_table_add(&table, S("2026-01-01 20 20/120 x"),
                                      err, sizeof(err)), -1);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(table.n, 2);

    fc_vat_table_init(&t);

    for (i = 0; i < FC_VAT_MAX; i++) {
        snprintf(line, sizeof(line), "20%02d-01-01 10 10/110 vat110", i);
        assert_int_equal(fc_vat_table_add(&t, S(line), err, sizeof(err)),
                         0);
    }

    assert_int_equal(fc_vat_table_add(&t, S("2099-01-01 10 10/110 vat110"),
                                      err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too many"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_rate_is_chosen_by_payment_date),
        cmocka_unit_test(test_vat_amounts_round_half_up),
        cmocka_unit_test(test_zero_rate_and_other_codes),
        cmocka_unit_test(test_bad_entries_are_refused_with_a_reason),
        cmocka_unit_test(test_duplicate_date_and_full_table),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}

/*
 * fc_money: checked arithmetic, rounding, parsing and formatting of
 * kopecks and millilitres.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_money.h"


static void
parse_ok(const char *s, int64_t expect)
{
    int64_t  v = 12345;

    if (fc_money_parse(s, strlen(s), &v) != 0 || v != expect) {
        fail_msg("fc_money_parse(\"%s\") gave %lld, expected %lld", s,
                 (long long) v, (long long) expect);
    }
}


static void
parse_bad(const char *s)
{
    int64_t  v = 12345;

    if (fc_money_parse(s, strlen(s), &v) != -1 || v != 12345) {
        fail_msg("fc_money_parse(\"%s\") accepted bad input", s);
    }
}


static void
test_checked_arithmetic_detects_overflow(void **state)
{
    int64_t  r = 7;

    (void) state;

    assert_int_equal(fc_add_i64(2, 3, &r), 0);
    assert_int_equal(r, 5);
    assert_int_equal(fc_add_i64(INT64_MAX, 1, &r), -1);
    assert_int_equal(r, 5);
    assert_int_equal(fc_add_i64(INT64_MIN, -1, &r), -1);

    assert_int_equal(fc_sub_i64(2, 3, &r), 0);
    assert_int_equal(r, -1);
    assert_int_equal(fc_sub_i64(INT64_MIN, 1, &r), -1);
    assert_int_equal(fc_sub_i64(0, INT64_MIN, &r), -1);

    assert_int_equal(fc_mul_i64(-4, 5, &r), 0);
    assert_int_equal(r, -20);
    assert_int_equal(fc_mul_i64(INT64_MAX / 2 + 1, 2, &r), -1);
    assert_int_equal(fc_mul_i64(INT64_MIN, -1, &r), -1);
}


static void
test_mul_div_rounds_half_away_from_zero(void **state)
{
    int64_t  r = 0;

    (void) state;

    /* 2.5 -> 3, 2.4 -> 2, and the mirror images for negatives */
    assert_int_equal(fc_mul_div_round(5, 1, 2, &r), 0);
    assert_int_equal(r, 3);
    assert_int_equal(fc_mul_div_round(-5, 1, 2, &r), 0);
    assert_int_equal(r, -3);
    assert_int_equal(fc_mul_div_round(12, 1, 5, &r), 0);
    assert_int_equal(r, 2);
    assert_int_equal(fc_mul_div_round(-12, 1, 5, &r), 0);
    assert_int_equal(r, -2);
    assert_int_equal(fc_mul_div_round(5, -1, 2, &r), 0);
    assert_int_equal(r, -3);
    assert_int_equal(fc_mul_div_round(5, 1, -2, &r), 0);
    assert_int_equal(r, -3);
    assert_int_equal(fc_mul_div_round(7, 0, 3, &r), 0);
    assert_int_equal(r, 0);
}


static void
test_mul_div_handles_large_amounts(void **state)
{
    int64_t  r = 0;

    (void) state;

    /* 1e15 kopecks * 22: the product exceeds int64, the result does not */
    assert_int_equal(fc_mul_div_round(1000000000000000LL, 22, 122, &r), 0);
    assert_int_equal(r, 180327868852459LL);

    assert_int_equal(fc_mul_div_round(INT64_MAX, INT64_MAX, INT64_MAX,
                                      &r), 0);
    assert_int_equal(r, INT64_MAX);

    assert_int_equal(fc_mul_div_round(INT64_MAX, 2, 1, &r), -1);
    assert_int_equal(fc_mul_div_round(1, 1, 0, &r), -1);
}


static void
test_money_parse_accepts_documented_forms(void **state)
{
    (void) state;

    parse_ok("1234.56", 123456);
    parse_ok("1234,56", 123456);
    parse_ok("1 234,56", 123456);
    parse_ok("1\xc2\xa0" "234,56", 123456);            /* no-break space */
    parse_ok("1\xe2\x80\xaf" "234.56", 123456);        /* narrow one */
    parse_ok("12 345 678.90", 1234567890);
    parse_ok("1234", 123400);
    parse_ok("-12.5", -1250);
    parse_ok("-0.05", -5);
    parse_ok("0", 0);
    parse_ok("007.10", 710);
    parse_ok("92233720368547758.07", INT64_MAX);
}


static void
test_money_parse_rejects_bad_input(void **state)
{
    (void) state;

    parse_bad("");
    parse_bad("-");
    parse_bad("1.234");
    parse_bad("1234.");
    parse_bad(".5");
    parse_bad("+1");
    parse_bad(" 1");
    parse_bad("1 ");
    parse_bad("12 34");
    parse_bad("1234 567");
    parse_bad("1  234");
    parse_bad("1,234.56");
    parse_bad("1.2.3");
    parse_bad("abc");
    parse_bad("12a");
    parse_bad("--1");
    parse_bad("1e5");
    parse_bad("92233720368547758.08");
    parse_bad("99999999999999999999");
}


static void
test_money_parse_respects_length(void **state)
{
    int64_t  v = 0;

    (void) state;

    /* a value inside a larger buffer, as nginx strings are */
    assert_int_equal(fc_money_parse("12.34xyz", 5, &v), 0);
    assert_int_equal(v, 1234);
    assert_int_equal(fc_money_parse("12.34", 0, &v), -1);
}


static void
test_money_format(void **state)
{
    char  buf[FC_MONEY_STR_LEN];

    (void) state;

    assert_int_equal(fc_money_format(123456, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "1234.56");
    fc_money_format(-5, buf, sizeof(buf));
    assert_string_equal(buf, "-0.05");
    fc_money_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "0.00");
    fc_money_format(100, buf, sizeof(buf));
    assert_string_equal(buf, "1.00");
    fc_money_format(INT64_MIN, buf, sizeof(buf));
    assert_string_equal(buf, "-92233720368547758.08");

    assert_int_equal(fc_money_format(123456, buf, 7), -1);
    assert_int_equal(fc_money_format(123456, buf, 8), 7);
}


static void
test_volume_parse_and_format(void **state)
{
    char     buf[FC_VOLUME_STR_LEN];
    int64_t  ml = 0;

    (void) state;

    assert_int_equal(fc_volume_parse("60", 2, &ml), 0);
    assert_int_equal(ml, 60000);
    assert_int_equal(fc_volume_parse("60,5", 4, &ml), 0);
    assert_int_equal(ml, 60500);
    assert_int_equal(fc_volume_parse("0.125", 5, &ml), 0);
    assert_int_equal(ml, 125);
    assert_int_equal(fc_volume_parse("1.2345", 6, &ml), -1);
    assert_int_equal(fc_volume_parse("", 0, &ml), -1);

    fc_volume_format(60000, buf, sizeof(buf));
    assert_string_equal(buf, "60.000");
    fc_volume_format(-125, buf, sizeof(buf));
    assert_string_equal(buf, "-0.125");
    fc_volume_format(1, buf, sizeof(buf));
    assert_string_equal(buf, "0.001");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_checked_arithmetic_detects_overflow),
        cmocka_unit_test(test_mul_div_rounds_half_away_from_zero),
        cmocka_unit_test(test_mul_div_handles_large_amounts),
        cmocka_unit_test(test_money_parse_accepts_documented_forms),
        cmocka_unit_test(test_money_parse_rejects_bad_input),
        cmocka_unit_test(test_money_parse_respects_length),
        cmocka_unit_test(test_money_format),
        cmocka_unit_test(test_volume_parse_and_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * fc_date: day numbers, weekdays, and "YYYY-MM-DD".
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_date.h"


static void
test_known_day_numbers(void **state)
{
    (void) state;

    assert_int_equal(fc_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(fc_days_from_civil(1969, 12, 31), -1);
    assert_int_equal(fc_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(fc_days_from_civil(2026, 12, 4), 20791);
    assert_int_equal(fc_days_from_civil(1, 1, 1), -719162);
}


static void
test_round_trip_over_many_years(void **state)
{
    int      month, day, m, d;
    int64_t  n, year, y;

    (void) state;

    /* every day from 1600 to 2400, compared with a plain day counter */
    n = fc_days_from_civil(1600, 1, 1);

    for (y = 1600; y < 2400; y++) {
        for (m = 1; m <= 12; m++) {
            for (d = 1; d <= fc_month_days(y, m); d++, n++) {
                if (fc_days_from_civil(y, m, d) != n) {
                    fail_msg("%lld-%d-%d", (long long) y, m, d);
                }

                fc_civil_from_days(n, &year, &month, &day);

                if (year != y || month != m || day != d) {
                    fail_msg("day %lld", (long long) n);
                }
            }
        }
    }
}


static void
test_leap_years_and_weekdays(void **state)
{
    (void) state;

    assert_true(fc_is_leap_year(2000));
    assert_true(fc_is_leap_year(2028));
    assert_false(fc_is_leap_year(1900));
    assert_false(fc_is_leap_year(2026));
    assert_int_equal(fc_month_days(2028, 2), 29);
    assert_int_equal(fc_month_days(2100, 2), 28);

    assert_int_equal(fc_iso_weekday(0), 4);                     /* Thu */
    assert_int_equal(fc_iso_weekday(-1), 3);
    assert_int_equal(fc_iso_weekday(-4), 7);
    assert_int_equal(fc_iso_weekday(fc_days_from_civil(2026, 12, 28)), 1);
    assert_int_equal(fc_iso_weekday(fc_days_from_civil(2027, 1, 3)), 7);
}


static void
test_date_parse_and_format(void **state)
{
    char     buf[FC_DATE_STR_LEN];
    int64_t  d = 5;

    (void) state;

    assert_int_equal(fc_date_parse("2028-02-29", 10, &d), 0);
    assert_int_equal(fc_date_format(d, buf, sizeof(buf)), 10);
    assert_string_equal(buf, "2028-02-29");

    assert_int_equal(fc_date_parse("2026-02-29", 10, &d), -1);
    assert_int_equal(fc_date_parse("2026-00-10", 10, &d), -1);
    assert_int_equal(fc_date_parse("2026-04-31", 10, &d), -1);
    assert_int_equal(fc_date_parse("0000-01-01", 10, &d), -1);
    assert_int_equal(fc_date_parse("2026/01/01", 10, &d), -1);
    assert_int_equal(fc_date_parse("2026-1-011", 10, &d), -1);
    assert_int_equal(fc_date_parse("2026-01-01", 9, &d), -1);
    assert_int_equal(fc_date_parse("+026-01-01", 10, &d), -1);

    assert_int_equal(fc_date_format(0, buf, 10), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_known_day_numbers),
        cmocka_unit_test(test_round_trip_over_many_years),
        cmocka_unit_test(test_leap_years_and_weekdays),
        cmocka_unit_test(test_date_parse_and_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

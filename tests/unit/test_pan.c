/*
 * fc_pan: Luhn check, PAN validation and masking for display.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_pan.h"


#define S(s)  s, strlen(s)


static void
test_luhn_check(void **state)
{
    (void) state;

    assert_true(fc_luhn_check(S("4111111111111111")));
    assert_true(fc_luhn_check(S("5555555555554444")));
    assert_true(fc_luhn_check(S("0")));
    assert_true(fc_luhn_check(S("18")));
    assert_false(fc_luhn_check(S("4111111111111112")));
    assert_false(fc_luhn_check(S("")));
    assert_false(fc_luhn_check(S("4111 1111 1111 1111")));
    assert_false(fc_luhn_check(S("411111111111111a")));
}


static void
test_luhn_digit_completes_a_number(void **state)
{
    (void) state;

    assert_int_equal(fc_luhn_digit(S("700583000000123")), 0);
    assert_int_equal(fc_luhn_digit(S("700583123456789012")), 6);
    assert_int_equal(fc_luhn_digit(S("411111111111111")), 1);
    assert_int_equal(fc_luhn_digit(S("")), -1);
    assert_int_equal(fc_luhn_digit(S("12x")), -1);
}


static void
test_pan_valid_needs_16_to_19_digits_and_luhn(void **state)
{
    (void) state;

    assert_true(fc_pan_valid(S("7005830000001230")));
    assert_true(fc_pan_valid(S("7005831234567890126")));
    assert_false(fc_pan_valid(S("7005830000001234")));          /* Luhn */
    assert_false(fc_pan_valid(S("411111111111")));              /* 12 */
    assert_false(fc_pan_valid(S("79927398713")));               /* 11 */
    assert_false(fc_pan_valid(S("70058312345678901265")));      /* 20 */
    assert_false(fc_pan_valid(S("4111-1111-1111-1111")));
}


static void
test_pan_mask_keeps_first_six_and_last_four(void **state)
{
    char  out[FC_PAN_MASKED_LEN];

    (void) state;

    assert_int_equal(fc_pan_mask(S("7005830000001234"), out, sizeof(out)),
                     16);
    assert_string_equal(out, "700583******1234");

    assert_int_equal(fc_pan_mask(S("7005831234567890126"), out,
                                 sizeof(out)), 19);
    assert_string_equal(out, "700583*********0126");
}


static void
test_pan_mask_refuses_what_it_cannot_hide(void **state)
{
    char  out[FC_PAN_MASKED_LEN];

    (void) state;

    assert_int_equal(fc_pan_mask(S("123456789012345"), out, sizeof(out)),
                     -1);
    assert_int_equal(fc_pan_mask(S("70058312345678901265"), out,
                                 sizeof(out)), -1);
    assert_int_equal(fc_pan_mask(S("7005 8300 0000 1234"), out,
                                 sizeof(out)), -1);
    assert_int_equal(fc_pan_mask(S("7005830000001234"), out, 16), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_luhn_check),
        cmocka_unit_test(test_luhn_digit_completes_a_number),
        cmocka_unit_test(test_pan_valid_needs_16_to_19_digits_and_luhn),
        cmocka_unit_test(test_pan_mask_keeps_first_six_and_last_four),
        cmocka_unit_test(test_pan_mask_refuses_what_it_cannot_hide),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

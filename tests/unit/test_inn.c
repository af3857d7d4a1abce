/*
 * fc_inn: INN check digits (10 and 12 digits) and the KPP format.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_inn.h"


#define S(s)  s, strlen(s)


static void
test_inn10_check_digit(void **state)
{
    (void) state;

    assert_true(fc_inn_valid(S("7707083893")));
    assert_true(fc_inn_valid(S("7736207543")));
    assert_true(fc_inn_valid(S("7830002293")));
    assert_false(fc_inn_valid(S("7707083894")));
    assert_false(fc_inn_valid(S("7707083883")));
}


static void
test_inn12_both_check_digits(void **state)
{
    (void) state;

    assert_true(fc_inn_valid(S("500100732259")));
    assert_true(fc_inn_valid(S("773370857141")));
    assert_false(fc_inn_valid(S("500100732258")));      /* 12th wrong */
    assert_false(fc_inn_valid(S("500100732269")));      /* 11th wrong */
}


static void
test_inn_rejects_other_lengths_and_characters(void **state)
{
    (void) state;

    assert_false(fc_inn_valid(S("")));
    assert_false(fc_inn_valid(S("770708389")));
    assert_false(fc_inn_valid(S("77070838931")));
    assert_false(fc_inn_valid(S("5001007322590")));
    assert_false(fc_inn_valid(S("770708389a")));
    assert_false(fc_inn_valid(S(" 7707083893")));
    assert_false(fc_inn_valid(S("77070 83893")));
}


static void
test_kpp_format(void **state)
{
    (void) state;

    assert_true(fc_kpp_valid(S("773601001")));
    assert_true(fc_kpp_valid(S("7736AB001")));
    assert_true(fc_kpp_valid(S("77360Z001")));
    assert_false(fc_kpp_valid(S("7736ab001")));         /* lower case */
    assert_false(fc_kpp_valid(S("A73601001")));         /* letter at 1 */
    assert_false(fc_kpp_valid(S("7736010A1")));         /* letter at 8 */
    assert_false(fc_kpp_valid(S("77360100")));
    assert_false(fc_kpp_valid(S("7736010011")));
    assert_false(fc_kpp_valid(S("7736-1001")));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_inn10_check_digit),
        cmocka_unit_test(test_inn12_both_check_digits),
        cmocka_unit_test(test_inn_rejects_other_lengths_and_characters),
        cmocka_unit_test(test_kpp_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

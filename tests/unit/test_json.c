/*
 * fc_json: JSON text with commas, escapes and exact money, into a fixed
 * buffer that is never overrun.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_json.h"


static void
test_nested_members_get_their_commas(void **state)
{
    char       buf[256];
    fc_json_t  j;

    (void) state;

    fc_json_init(&j, buf, sizeof(buf));
    fc_json_object(&j, NULL);
    fc_json_cstr(&j, "a", "x");
    fc_json_int(&j, "b", -42);
    fc_json_array(&j, "c");
    fc_json_int(&j, NULL, 1);
    fc_json_object(&j, NULL);
    fc_json_object_end(&j);
    fc_json_array(&j, NULL);
    fc_json_array_end(&j);
    fc_json_null(&j, NULL);
    fc_json_array_end(&j);
    fc_json_object(&j, "d");
    fc_json_int(&j, "e", INT64_MIN);
    fc_json_object_end(&j);
    fc_json_object_end(&j);

    assert_int_equal(fc_json_finish(&j), strlen(buf));
    assert_string_equal(buf, "{\"a\":\"x\",\"b\":-42,\"c\":[1,{},[],null],"
                        "\"d\":{\"e\":-9223372036854775808}}");
}


static void
test_money_is_decimal_text_of_kopecks(void **state)
{
    char       buf[256];
    fc_json_t  j;

    (void) state;

    fc_json_init(&j, buf, sizeof(buf));
    fc_json_array(&j, NULL);
    fc_json_money(&j, NULL, 500000);
    fc_json_money(&j, NULL, 180333);
    fc_json_money(&j, NULL, 5);
    fc_json_money(&j, NULL, 0);
    fc_json_money(&j, NULL, -1050);
    fc_json_money(&j, NULL, INT64_MAX);
    fc_json_array_end(&j);

    assert_true(fc_json_finish(&j) > 0);
    assert_string_equal(buf, "[5000.00,1803.33,0.05,0.00,-10.50,"
                        "92233720368547758.07]");
}


static void
test_strings_are_escaped_and_utf8_kept(void **state)
{
    char       buf[256];
    fc_json_t  j;

    (void) state;

    fc_json_init(&j, buf, sizeof(buf));
    fc_json_object(&j, NULL);
    fc_json_cstr(&j, "q\"k", "a\"b\\c\nd\re\tf\x01g/");
    fc_json_cstr(&j, "name", "Аванс по договору FC-0001");
    fc_json_str(&j, "nul", "a\0b", 3);
    fc_json_object_end(&j);

    assert_true(fc_json_finish(&j) > 0);
    assert_string_equal(buf, "{\"q\\\"k\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g/\","
                        "\"name\":\"Аванс по договору FC-0001\","
                        "\"nul\":\"a\\u0000b\"}");
}


static void
test_full_buffer_fails_and_stays_terminated(void **state)
{
    size_t     size;
    char       buf[64];
    fc_json_t  j;

    (void) state;

    /* every size short of the text fails; the exact size plus NUL works */
    for (size = 1; size <= 18; size++) {
        memset(buf, 'x', sizeof(buf));
        fc_json_init(&j, buf, size);
        fc_json_object(&j, NULL);
        fc_json_money(&j, "sum", 500000);
        fc_json_object_end(&j);

        if (size < 16) {
            assert_int_equal(fc_json_finish(&j), -1);
            assert_true(strlen(buf) < size);
            assert_int_equal(buf[size], 'x');

        } else {
            assert_int_equal(fc_json_finish(&j), 15);
            assert_string_equal(buf, "{\"sum\":5000.00}");
        }
    }

    fc_json_init(&j, buf, 0);
    fc_json_null(&j, NULL);
    assert_int_equal(fc_json_finish(&j), -1);
}


static void
test_misuse_is_reported(void **state)
{
    int        i;
    char       buf[256];
    fc_json_t  j;

    (void) state;

    /* still open */
    fc_json_init(&j, buf, sizeof(buf));
    fc_json_object(&j, NULL);
    assert_int_equal(fc_json_finish(&j), -1);

    /* closed once too often */
    fc_json_init(&j, buf, sizeof(buf));
    fc_json_array(&j, NULL);
    fc_json_array_end(&j);
    fc_json_array_end(&j);
    assert_int_equal(fc_json_finish(&j), -1);

    /* two values at the top */
    fc_json_init(&j, buf, sizeof(buf));
    fc_json_int(&j, NULL, 1);
    fc_json_int(&j, NULL, 2);
    assert_int_equal(fc_json_finish(&j), -1);

    /* nothing at all */
    fc_json_init(&j, buf, sizeof(buf));
    assert_int_equal(fc_json_finish(&j), -1);

    /* too deep */
    fc_json_init(&j, buf, sizeof(buf));

    for (i = 0; i < FC_JSON_DEPTH_MAX; i++) {
        fc_json_array(&j, NULL);
    }

    for (i = 0; i < FC_JSON_DEPTH_MAX; i++) {
        fc_json_array_end(&j);
    }

    assert_int_equal(fc_json_finish(&j), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_nested_members_get_their_commas),
        cmocka_unit_test(test_money_is_decimal_text_of_kopecks),
        cmocka_unit_test(test_strings_are_escaped_and_utf8_kept),
        cmocka_unit_test(test_full_buffer_fails_and_stays_terminated),
        cmocka_unit_test(test_misuse_is_reported),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

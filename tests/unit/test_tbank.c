/*
 * fc_tbank: the Token of T-Bank acquiring requests and notifications.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_tbank.h"


/* the bank's published example */
#define EXAMPLE_JSON                                                      \
    "{\"TerminalKey\": \"MerchantTerminalKey\", \"Amount\": 19200,"       \
    " \"OrderId\": \"00000\","                                            \
    " \"Description\": "                                                  \
    "\"Подарочная карта на 1000 рублей\"}"
#define EXAMPLE_PASSWORD  "11111111111111"
#define EXAMPLE_TOKEN                                                     \
    "72dd466f8ace0a37a1f740ce5fb78101712bc0665d91a8108c7c8a0ccd426db2"

/* a notification; its Token was computed independently (Python) */
#define NOTIFY_PASSWORD  "secret-pw"
#define NOTIFY_TOKEN                                                      \
    "da97789031bf1189b43a168d8682a8d20092257198369eaf9e4b25420e2c242f"
#define NOTIFY_JSON(token)                                                \
    "{\"TerminalKey\": \"MerchantTerminalKey\", \"OrderId\": \"21050\","  \
    " \"Success\": true, \"Status\": \"CONFIRMED\", \"PaymentId\": 13660,"\
    " \"ErrorCode\": \"0\", \"Amount\": 100000, \"CardId\": 322264,"      \
    " \"Pan\": \"430000******0777\", \"ExpDate\": \"1122\","              \
    " \"RebillId\": null, \"Data\": {\"Route\": \"ACQ\"},"                \
    " \"Token\": \"" token "\"}"


static json_t *
load(const char *text)
{
    json_t        *obj;
    json_error_t   err;

    obj = json_loads(text, 0, &err);

    if (obj == NULL) {
        fail_msg("bad test JSON: %s", err.text);
    }

    return obj;
}


static void
test_published_example_reproduces(void **state)
{
    char     token[FC_TBANK_TOKEN_LEN];
    json_t  *obj;

    (void) state;

    obj = load(EXAMPLE_JSON);
    assert_int_equal(fc_tbank_token(obj, EXAMPLE_PASSWORD, token), 0);
    assert_string_equal(token, EXAMPLE_TOKEN);
    json_decref(obj);
}


static void
test_nested_and_null_fields_do_not_count(void **state)
{
    char     token[FC_TBANK_TOKEN_LEN];
    json_t  *obj;

    (void) state;

    obj = load("{\"TerminalKey\": \"MerchantTerminalKey\", \"Amount\": 19200,"
               " \"OrderId\": \"00000\", \"Receipt\": {\"Email\": \"a@b\"},"
               " \"DATA\": {\"Phone\": \"+7\"}, \"Shops\": [1, 2],"
               " \"CustomerKey\": null, \"Token\": \"ignored\","
               " \"Description\": "
               "\"Подарочная карта на 1000 рублей\"}");
    assert_int_equal(fc_tbank_token(obj, EXAMPLE_PASSWORD, token), 0);
    assert_string_equal(token, EXAMPLE_TOKEN);
    json_decref(obj);
}


static void
test_notification_with_boolean_verifies(void **state)
{
    char     token[FC_TBANK_TOKEN_LEN];
    json_t  *obj;

    (void) state;

    obj = load(NOTIFY_JSON(NOTIFY_TOKEN));
    assert_int_equal(fc_tbank_token(obj, NOTIFY_PASSWORD, token), 0);
    assert_string_equal(token, NOTIFY_TOKEN);
    assert_int_equal(fc_tbank_token_verify(obj, NOTIFY_PASSWORD), 1);
    assert_int_equal(fc_tbank_token_verify(obj, "wrong-pw"), 0);

    /* a changed field breaks the signature */
    json_object_set_new(obj, "Amount", json_integer(100001));
    assert_int_equal(fc_tbank_token_verify(obj, NOTIFY_PASSWORD), 0);
    json_object_set_new(obj, "Amount", json_integer(100000));
    json_object_set_new(obj, "Success", json_false());
    assert_int_equal(fc_tbank_token_verify(obj, NOTIFY_PASSWORD), 0);

    json_decref(obj);
}


static void
test_token_case_and_form(void **state)
{
    json_t  *obj;

    (void) state;

    obj = load(NOTIFY_JSON(
        "DA97789031BF1189B43A168D8682A8D20092257198369EAF9E4B25420E2C242F"));
    assert_int_equal(fc_tbank_token_verify(obj, NOTIFY_PASSWORD), 1);
    json_decref(obj);

    obj = load(NOTIFY_JSON(
        "da97789031bf1189b43a168d8682a8d20092257198369eaf9e4b25420e2c242"));
    assert_int_equal(fc_tbank_token_verify(obj, NOTIFY_PASSWORD), 0);
    json_decref(obj);

    obj = load(EXAMPLE_JSON);
    assert_int_equal(fc_tbank_token_verify(obj, EXAMPLE_PASSWORD), 0);
    json_object_set_new(obj, "Token", json_integer(1));
    assert_int_equal(fc_tbank_token_verify(obj, EXAMPLE_PASSWORD), 0);
    json_decref(obj);
}


static void
test_unsignable_messages_are_refused(void **state)
{
    char     token[FC_TBANK_TOKEN_LEN];
    json_t  *obj;

    (void) state;

    obj = load("{\"Amount\": 192.5, \"OrderId\": \"1\"}");
    assert_int_equal(fc_tbank_token(obj, "pw", token), -1);
    assert_int_equal(fc_tbank_token_verify(obj, "pw"), -1);
    json_decref(obj);

    obj = load("{\"Password\": \"chosen\", \"OrderId\": \"1\"}");
    assert_int_equal(fc_tbank_token(obj, "pw", token), -1);
    json_decref(obj);

    obj = load("[1, 2]");
    assert_int_equal(fc_tbank_token(obj, "pw", token), -1);
    json_decref(obj);

    /* an empty object is signed by the password alone */
    obj = load("{}");
    assert_int_equal(fc_tbank_token(obj, "", token), 0);
    assert_string_equal(token, "e3b0c44298fc1c149afbf4c8996fb924"
                               "27ae41e4649b934ca495991b7852b855");
    json_decref(obj);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_published_example_reproduces),
        cmocka_unit_test(test_nested_and_null_fields_do_not_count),
        cmocka_unit_test(test_notification_with_boolean_verifies),
        cmocka_unit_test(test_token_case_and_form),
        cmocka_unit_test(test_unsignable_messages_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

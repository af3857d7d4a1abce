/*
 * fcd's outbox: what the deliveries send, built from rows' payloads as
 * PostgreSQL writes them, and what they keep of the answers (no server
 * needed).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fc_receipt.h"
#include "fcd.h"


#define S(s)  s, strlen(s)

#define PAYLOAD_RECEIPT                                                   \
    "{\"email\": \"buh@example.ru\", \"amount\": 500000, "                \
    "\"timestamp\": \"03.01.2026 14:05:09\", "                            \
    "\"item_name\": "                                                     \
    "\"Аванс по договору FC-0001\", " \
    "\"external_id\": \"receipt:42\", \"payment_date\": \"2026-01-03\"}"

#define PAYLOAD_ONEC                                                      \
    "{\"date\": \"2026-01-03T14:05:09\", \"amount\": 1000000, "           \
    "\"org_inn\": \"7707083893\", \"order_id\": \"FC-42-a1b2c3\", "       \
    "\"org_name\": \"ООО \\\"Ромашка\\\"\", " \
    "\"ref_key\": "                                                       \
    "\"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d\", \"payment_id\": 42, "     \
    "\"contract_number\": \"FC-0001\"}"


static fcd_conf_t  conf;


static int
setup(void **state)
{
    char  err[256];

    (void) state;

    memset(&conf, 0, sizeof(fcd_conf_t));
    fc_vat_table_init(&conf.vat);

    if (fc_vat_table_add(&conf.vat, S("2019-01-01 20 20/120 vat120"), err,
                         sizeof(err)) != 0
        || fc_vat_table_add(&conf.vat, S("2026-01-01 22 22/122 vat122"),
                            err, sizeof(err)) != 0)
    {
        return -1;
    }

    snprintf(conf.company_inn, sizeof(conf.company_inn), "7736050003");
    snprintf(conf.company_sno, sizeof(conf.company_sno), "osn");
    snprintf(conf.company_email, sizeof(conf.company_email),
             "receipts@fuelcard.example");
    snprintf(conf.company_payment_address,
             sizeof(conf.company_payment_address),
             "https://cabinet.fuelcard.example");

    return 0;
}


static void
test_receipt_request_from_the_payload(void **state)
{
    int   len;
    char  buf[FC_RECEIPT_JSON_MAX], err[FCD_DELIVERY_ERR_LEN];

    (void) state;

    len = fcd_atol_sell_request(&conf, PAYLOAD_RECEIPT, buf, sizeof(buf),
                                err, sizeof(err));

    assert_int_equal(len, strlen(buf));
    assert_non_null(strstr(buf, "{\"external_id\":\"receipt:42\","
                                "\"timestamp\":\"03.01.2026 14:05:09\","));
    assert_non_null(strstr(buf, "\"client\":{\"email\":\"buh@example.ru\"}"));
    assert_non_null(strstr(buf, "\"company\":{\"email\":"
                                "\"receipts@fuelcard.example\",\"sno\":"
                                "\"osn\",\"inn\":\"7736050003\","));
    assert_non_null(strstr(buf, "\"price\":5000.00,\"quantity\":1,"
                                "\"sum\":5000.00,\"payment_method\":"
                                "\"advance\",\"payment_object\":\"payment\","
                                "\"vat\":{\"type\":\"vat122\","
                                "\"sum\":901.64}"));
    assert_non_null(strstr(buf, "\"payments\":[{\"type\":1,"
                                "\"sum\":5000.00}],\"total\":5000.00}}"));
}


static void
test_receipt_payload_errors(void **state)
{
    char  buf[FC_RECEIPT_JSON_MAX], err[FCD_DELIVERY_ERR_LEN];

    (void) state;

    assert_int_equal(fcd_atol_sell_request(&conf, "[1]", buf, sizeof(buf),
                                           err, sizeof(err)), -1);
    assert_non_null(strstr(err, "payload is not a JSON object"));

    assert_int_equal(fcd_atol_sell_request(&conf, "{\"amount\": ", buf,
                                           sizeof(buf), err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "payload is not a JSON object"));

    /* a sum in roubles would be a fraction: only kopecks are taken */
    assert_int_equal(fcd_atol_sell_request(&conf,
        "{\"email\": \"a@b.ru\", \"amount\": 5000.00, "
        "\"timestamp\": \"03.01.2026 14:05:09\", \"item_name\": \"x\", "
        "\"external_id\": \"receipt:1\", \"payment_date\": \"2026-01-03\"}",
        buf, sizeof(buf), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "amount is not a whole number of kopecks"));

    assert_int_equal(fcd_atol_sell_request(&conf,
        "{\"email\": \"a@b.ru\", \"amount\": 100, "
        "\"timestamp\": \"03.01.2026 14:05:09\", \"item_name\": \"x\", "
        "\"external_id\": \"receipt:1\", \"payment_date\": \"2018-12-31\"}",
        buf, sizeof(buf), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no vat entry of the configuration is in "
                                "force on payment_date 2018-12-31"));

    assert_int_equal(fcd_atol_sell_request(&conf,
        "{\"email\": \"a@b.ru\", \"amount\": 100, "
        "\"timestamp\": \"03.01.2026 14:05:09\", \"item_name\": \"x\", "
        "\"external_id\": \"receipt:1\", \"payment_date\": \"03.01.2026\"}",
        buf, sizeof(buf), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "payment_date is not YYYY-MM-DD: "
                                "\"03.01.2026\""));

    assert_int_equal(fcd_atol_sell_request(&conf,
        "{\"amount\": 100, \"timestamp\": \"03.01.2026 14:05:09\", "
        "\"item_name\": \"x\", \"external_id\": \"receipt:1\", "
        "\"payment_date\": \"2026-01-03\"}",
        buf, sizeof(buf), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "email"));

    assert_int_equal(fcd_atol_sell_request(&conf,
        "{\"email\": \"a@b.ru\", \"amount\": 0, "
        "\"timestamp\": \"03.01.2026 14:05:09\", \"item_name\": \"x\", "
        "\"external_id\": \"receipt:1\", \"payment_date\": \"2026-01-03\"}",
        buf, sizeof(buf), err, sizeof(err)), -1);
    assert_string_equal(err, "payload: amount: must be positive, got 0");
}


static void
test_onec_document_from_the_payload(void **state)
{
    int   len;
    char  buf[4096], ref[40], err[FCD_DELIVERY_ERR_LEN];

    (void) state;

    len = fcd_onec_document(PAYLOAD_ONEC, buf, sizeof(buf), ref,
                            sizeof(ref), err, sizeof(err));

    assert_int_equal(len, strlen(buf));
    assert_string_equal(ref, "5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d");
    assert_string_equal(buf,
        "{\"Ref_Key\":\"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d\","
        "\"Date\":\"2026-01-03T14:05:09\","
        "\"СуммаДокумента\":10000.00,"
        "\"НазначениеПлатежа\":"
        "\"Пополнение договора FC-0001 банковской "
        "картой, заказ FC-42-a1b2c3\","
        "\"Контрагент_ИНН\":\"7707083893\","
        "\"НомерДоговора\":\"FC-0001\","
        "\"ИдентификаторПлатежа\":42}");
}


static void
test_onec_payload_errors(void **state)
{
    char  buf[4096], ref[40], err[FCD_DELIVERY_ERR_LEN];

    (void) state;

    /* the key goes into a URL: only a GUID is taken */
    assert_int_equal(fcd_onec_document(
        "{\"date\": \"2026-01-03T14:05:09\", \"amount\": 100, "
        "\"org_inn\": \"7707083893\", \"order_id\": \"FC-1-aaaaaa\", "
        "\"ref_key\": \"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d')/x\", "
        "\"payment_id\": 1, \"contract_number\": \"FC-0001\"}",
        buf, sizeof(buf), ref, sizeof(ref), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ref_key is not a GUID"));

    assert_int_equal(fcd_onec_document(
        "{\"date\": \"2026-01-03 14:05:09\", \"amount\": 100, "
        "\"org_inn\": \"7707083893\", \"order_id\": \"FC-1-aaaaaa\", "
        "\"ref_key\": \"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d\", "
        "\"payment_id\": 1, \"contract_number\": \"FC-0001\"}",
        buf, sizeof(buf), ref, sizeof(ref), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "date is not YYYY-MM-DDTHH:MM:SS"));

    assert_int_equal(fcd_onec_document(
        "{\"date\": \"2026-01-03T14:05:09\", \"amount\": \"100\", "
        "\"org_inn\": \"7707083893\", \"order_id\": \"FC-1-aaaaaa\", "
        "\"ref_key\": \"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d\", "
        "\"payment_id\": 1, \"contract_number\": \"FC-0001\"}",
        buf, sizeof(buf), ref, sizeof(ref), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "amount is not a positive whole number"));

    assert_int_equal(fcd_onec_document(
        "{\"date\": \"2026-01-03T14:05:09\", \"amount\": 100, "
        "\"ref_key\": \"5f0c3a52-8d1e-4b7a-9c2f-0e6d1a2b3c4d\", "
        "\"payment_id\": 1, \"contract_number\": \"FC-0001\"}",
        buf, sizeof(buf), ref, sizeof(ref), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "are required"));

    assert_int_equal(fcd_onec_document("null", buf, sizeof(buf), ref,
                                       sizeof(ref), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "payload is not a JSON object"));
}


static void
test_idempotency_keys_and_results(void **state)
{
    char             *s;
    fcd_http_resp_t   resp;

    (void) state;

    assert_true(fcd_outbox_key_usable("crm:42:CONFIRMED"));
    assert_true(fcd_outbox_key_usable("5f0c3a52-8d1e-4b7a"));
    assert_false(fcd_outbox_key_usable(NULL));
    assert_false(fcd_outbox_key_usable(""));
    assert_false(fcd_outbox_key_usable("a b"));
    assert_false(fcd_outbox_key_usable("a\r\nX-Evil: 1"));
    assert_false(fcd_outbox_key_usable("ключ"));

    memset(&resp, 0, sizeof(fcd_http_resp_t));
    resp.status = 201;
    resp.body = "{\"id\": 7, \"sum\": 5000.00}";
    s = fcd_outbox_result(&resp);
    assert_string_equal(s, "{\"id\": 7, \"sum\": 5000.00}");
    free(s);

    resp.body = "Created";
    s = fcd_outbox_result(&resp);
    assert_string_equal(s, "{\"http_status\": 201}");
    free(s);

    resp.body = NULL;
    resp.status = 409;
    s = fcd_outbox_result(&resp);
    assert_string_equal(s, "{\"http_status\": 409}");
    free(s);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_receipt_request_from_the_payload),
        cmocka_unit_test(test_receipt_payload_errors),
        cmocka_unit_test(test_onec_document_from_the_payload),
        cmocka_unit_test(test_onec_payload_errors),
        cmocka_unit_test(test_idempotency_keys_and_results),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}

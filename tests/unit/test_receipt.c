/*
 * fc_receipt: the sell request of a top-up, an advance, with VAT at the
 * calculated rate of the payment date and sums written from kopecks.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fc_date.h"
#include "fc_receipt.h"
#include "fc_vat.h"


#define S(s)  s, strlen(s)


static fc_vat_table_t  table;


static int
setup(void **state)
{
    char  err[256];

    (void) state;

    fc_vat_table_init(&table);

    if (fc_vat_table_add(&table, S("2019-01-01 20 20/120 vat120"), err,
                         sizeof(err)) != 0
        || fc_vat_table_add(&table, S("2026-01-01 22 22/122 vat122"), err,
                            sizeof(err)) != 0)
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


static fc_receipt_t
receipt(int64_t amount, const char *date)
{
    fc_receipt_t  r;

    memset(&r, 0, sizeof(fc_receipt_t));
    r.external_id = "receipt:42";
    r.timestamp = "03.01.2026 14:05:09";
    r.callback_url = "";
    r.client_email = "buh@example.ru";
    r.item_name = "Аванс по договору FC-0001";
    r.amount = amount;
    r.vat = rate_on(date);
    r.company_email = "receipts@fuelcard.example";
    r.company_sno = "osn";
    r.company_inn = "7736050003";
    r.payment_address = "https://cabinet.fuelcard.example";

    return r;
}


static void
test_advance_of_5000_roubles_in_2026(void **state)
{
    int           len;
    char          buf[FC_RECEIPT_JSON_MAX], err[256];
    fc_receipt_t  r;

    (void) state;

    r = receipt(500000, "2026-01-03");
    len = fc_receipt_sell_json(&r, buf, sizeof(buf), err, sizeof(err));

    assert_int_equal(len, strlen(buf));

    /* 5000.00 x 22/122 = 901.639.. -> 901.64 */
    assert_string_equal(buf,
        "{\"external_id\":\"receipt:42\","
        "\"timestamp\":\"03.01.2026 14:05:09\","
        "\"service\":{\"callback_url\":\"\"},"
        "\"receipt\":{"
        "\"client\":{\"email\":\"buh@example.ru\"},"
        "\"company\":{\"email\":\"receipts@fuelcard.example\","
        "\"sno\":\"osn\",\"inn\":\"7736050003\","
        "\"payment_address\":\"https://cabinet.fuelcard.example\"},"
        "\"items\":[{\"name\":\"Аванс по договору FC-0001\","
        "\"price\":5000.00,\"quantity\":1,\"sum\":5000.00,"
        "\"payment_method\":\"advance\",\"payment_object\":\"payment\","
        "\"vat\":{\"type\":\"vat122\",\"sum\":901.64}}],"
        "\"payments\":[{\"type\":1,\"sum\":5000.00}],"
        "\"total\":5000.00}}");
}


static void
test_vat_follows_the_payment_date(void **state)
{
    char          buf[FC_RECEIPT_JSON_MAX], err[256];
    fc_receipt_t  r;

    (void) state;

    /* the reference's vectors: 10,000.00 and 1,000.00 at 22/122 */
    r = receipt(1000000, "2026-01-01");
    assert_true(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                     sizeof(err)) > 0);
    assert_non_null(strstr(buf, "\"vat\":{\"type\":\"vat122\","
                                "\"sum\":1803.28}"));
    assert_non_null(strstr(buf, "\"total\":10000.00}"));

    r = receipt(100000, "2026-06-30");
    assert_true(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                     sizeof(err)) > 0);
    assert_non_null(strstr(buf, "\"sum\":180.33}"));

    /* the last day of 2025 is still 20/120: 60.00 -> 10.00 */
    r = receipt(6000, "2025-12-31");
    assert_true(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                     sizeof(err)) > 0);
    assert_non_null(strstr(buf, "\"vat\":{\"type\":\"vat120\","
                                "\"sum\":10.00}"));
    assert_non_null(strstr(buf, "\"price\":60.00,"));

    /* one kopeck: its VAT rounds to nothing */
    r = receipt(1, "2026-01-01");
    assert_true(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                     sizeof(err)) > 0);
    assert_non_null(strstr(buf, "\"price\":0.01,"));
    assert_non_null(strstr(buf, "\"sum\":0.00}"));
}


static void
test_fields_are_escaped(void **state)
{
    char          buf[FC_RECEIPT_JSON_MAX], err[256];
    fc_receipt_t  r;

    (void) state;

    r = receipt(100000, "2026-01-01");
    r.item_name = "Аванс \"по\" договору\\FC";
    r.client_email = "a\"b@example.ru";
    assert_true(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                     sizeof(err)) > 0);
    assert_non_null(strstr(buf, "\"name\":\"Аванс \\\"по\\\" "
                                "договору\\\\FC\""));
    assert_non_null(strstr(buf, "\"email\":\"a\\\"b@example.ru\""));
}


static void
test_bad_input_is_named(void **state)
{
    char          buf[FC_RECEIPT_JSON_MAX], err[256];
    fc_receipt_t  r;

    (void) state;

    r = receipt(0, "2026-01-01");
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_string_equal(err, "amount: must be positive, got 0");

    r = receipt(-500, "2026-01-01");
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "got -500"));

    r = receipt(100, "2018-12-31");
    assert_null(r.vat);
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "no VAT rate"));

    r = receipt(100, "2026-01-01");
    r.timestamp = "2026-01-03 14:05:09";
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_string_equal(err, "timestamp: expected \"dd.mm.yyyy HH:MM:SS\", "
                        "got \"2026-01-03 14:05:09\"");

    r = receipt(100, "2026-01-01");
    r.timestamp = "03.01.2026 14:05:0";
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);

    r = receipt(100, "2026-01-01");
    r.client_email = "";
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "email is empty"));

    r = receipt(100, "2026-01-01");
    r.external_id = "";
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "external_id"));

    r = receipt(100, "2026-01-01");
    r.item_name = "";
    assert_int_equal(fc_receipt_sell_json(&r, buf, sizeof(buf), err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "item_name"));

    /* a buffer too small is an error, never an overrun */
    r = receipt(100, "2026-01-01");
    assert_int_equal(fc_receipt_sell_json(&r, buf, 100, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "does not fit in 100 bytes"));
    assert_true(strlen(buf) < 100);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_advance_of_5000_roubles_in_2026),
        cmocka_unit_test(test_vat_follows_the_payment_date),
        cmocka_unit_test(test_fields_are_escaped),
        cmocka_unit_test(test_bad_input_is_named),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}

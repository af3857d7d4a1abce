/*
 * The sell request of a top-up's receipt.
 */

#include <stdio.h>
#include <string.h>

#include "fc_json.h"
#include "fc_receipt.h"


/* at most this many bytes of a bad value are quoted in a message */
#define FC_RECEIPT_QUOTE  64


static int fc_receipt_timestamp_valid(const char *s);


int
fc_receipt_sell_json(const fc_receipt_t *r, char *buf, size_t size,
    char *err, size_t errlen)
{
    int        len;
    int64_t    vat;
    fc_json_t  json;

    if (r->external_id[0] == '\0') {
        snprintf(err, errlen, "external_id is empty");
        return -1;
    }

    if (!fc_receipt_timestamp_valid(r->timestamp)) {
        snprintf(err, errlen, "timestamp: expected \"dd.mm.yyyy HH:MM:SS\", "
                 "got \"%.*s\"", FC_RECEIPT_QUOTE, r->timestamp);
        return -1;
    }

    if (r->client_email[0] == '\0') {
        snprintf(err, errlen, "email is empty: the receipt has nowhere to "
                 "go");
        return -1;
    }

    if (r->item_name[0] == '\0') {
        snprintf(err, errlen, "item_name is empty");
        return -1;
    }

    if (r->amount <= 0) {
        snprintf(err, errlen, "amount: must be positive, got %lld",
                 (long long) r->amount);
        return -1;
    }

    if (r->vat == NULL) {
        snprintf(err, errlen, "no VAT rate for the payment date");
        return -1;
    }

    if (fc_vat_amount(r->vat, r->amount, &vat) != 0) {
        snprintf(err, errlen, "amount: VAT of %lld overflows",
                 (long long) r->amount);
        return -1;
    }

    fc_json_init(&json, buf, size);

    fc_json_object(&json, NULL);
    fc_json_cstr(&json, "external_id", r->external_id);
    fc_json_cstr(&json, "timestamp", r->timestamp);

    fc_json_object(&json, "service");
    fc_json_cstr(&json, "callback_url", r->callback_url);
    fc_json_object_end(&json);

    fc_json_object(&json, "receipt");

    fc_json_object(&json, "client");
    fc_json_cstr(&json, "email", r->client_email);
    fc_json_object_end(&json);

    fc_json_object(&json, "company");
    fc_json_cstr(&json, "email", r->company_email);
    fc_json_cstr(&json, "sno", r->company_sno);
    fc_json_cstr(&json, "inn", r->company_inn);
    fc_json_cstr(&json, "payment_address", r->payment_address);
    fc_json_object_end(&json);

    fc_json_array(&json, "items");
    fc_json_object(&json, NULL);
    fc_json_cstr(&json, "name", r->item_name);
    fc_json_money(&json, "price", r->amount);
    fc_json_int(&json, "quantity", 1);
    fc_json_money(&json, "sum", r->amount);
    fc_json_cstr(&json, "payment_method", "advance");
    fc_json_cstr(&json, "payment_object", "payment");
    fc_json_object(&json, "vat");
    fc_json_cstr(&json, "type", r->vat->code);
    fc_json_money(&json, "sum", vat);
    fc_json_object_end(&json);
    fc_json_object_end(&json);
    fc_json_array_end(&json);

    fc_json_array(&json, "payments");
    fc_json_object(&json, NULL);
    fc_json_int(&json, "type", 1);
    fc_json_money(&json, "sum", r->amount);
    fc_json_object_end(&json);
    fc_json_array_end(&json);

    fc_json_money(&json, "total", r->amount);
    fc_json_object_end(&json);

    fc_json_object_end(&json);

    len = fc_json_finish(&json);

    if (len < 0) {
        snprintf(err, errlen, "the receipt does not fit in %zu bytes", size);
        return -1;
    }

    return len;
}


/* only the form: the cash register judges the date itself */

static int
fc_receipt_timestamp_valid(const char *s)
{
    size_t             i;
    static const char  form[] = "dd.mm.yyyy HH:MM:SS";

    if (strlen(s) != FC_RECEIPT_TIMESTAMP_LEN) {
        return 0;
    }

    for (i = 0; i < FC_RECEIPT_TIMESTAMP_LEN; i++) {
        if (form[i] == '.' || form[i] == ' ' || form[i] == ':') {
            if (s[i] != form[i]) {
                return 0;
            }

        } else if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}

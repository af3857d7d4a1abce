/*
 * Delivering a payment's outcome to the CRM.
 *
 * The row's payload is the record, sent as PostgreSQL wrote it: POST
 * <crm_url>/payments with the row's idempotency key in Idempotency-Key,
 * so that a retry after a lost answer is stored once.  Any 2xx is done.
 */

#include <stdio.h>
#include <string.h>

#include "fcd.h"


int
fcd_crm_deliver(fcd_t *fcd, const fcd_outbox_row_t *row, fcd_delivery_t *d)
{
    int              rc;
    char             url[FCD_URL_LEN + 16], key[FCD_NAME_LEN + 32];
    fcd_http_req_t   req;
    fcd_http_resp_t  resp;

    if (fcd->conf.crm_url[0] == '\0') {
        snprintf(d->error, sizeof(d->error), "no crm_url in the "
                 "configuration");
        return FCD_DELIVERY_FAILED;
    }

    snprintf(url, sizeof(url), "%s/payments", fcd->conf.crm_url);

    if (fcd_outbox_key_usable(row->key)) {
        snprintf(key, sizeof(key), "Idempotency-Key: %s", row->key);

    } else {
        snprintf(key, sizeof(key), "Idempotency-Key: outbox-%lld",
                 (long long) row->id);
    }

    memset(&req, 0, sizeof(fcd_http_req_t));
    req.method = "POST";
    req.url = url;
    req.body = row->payload;
    req.body_len = strlen(row->payload);
    req.headers[0] = key;

    rc = fcd_http_request(fcd, &req, &resp);
    d->status = resp.status;

    if (rc == 0 && resp.status >= 200 && resp.status < 300) {
        d->result = fcd_outbox_result(&resp);
        fcd_http_resp_free(&resp);

        if (d->result == NULL) {
            snprintf(d->error, sizeof(d->error), "out of memory");
            return FCD_DELIVERY_FAILED;
        }

        return FCD_DELIVERED;
    }

    fcd_http_describe("POST /payments", &resp, d->error, sizeof(d->error));
    fcd_http_resp_free(&resp);

    return FCD_DELIVERY_FAILED;
}

/*
 * Delivering a top-up to 1C as a document, through 1C's OData interface.
 *
 * POST <onec_url>/odata/standard.odata/Document_<onec_document>
 * ?$format=json with HTTP Basic auth creates the document; 201 is done.
 * The document carries our own Ref_Key, a GUID PostgreSQL chose when
 * it wrote the row, so a document is never created twice:
 *
 * - a POST whose Ref_Key exists already is refused (409, or 400 saying
 *   "already exists"): the document is there, which is done;
 * - a retry (any attempt after the first) first asks for
 *   Document_<kind>(guid'<Ref_Key>'): 200 means an earlier attempt
 *   created it and only its answer was lost, which is done too; 404
 *   means it is not there, and the POST follows.
 *
 * The document's fields are built here from the row's payload, so that
 * this adapter is all that changes if 1C is reached another way.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fc_json.h"
#include "fcd.h"


/* a GUID's text, 36 characters, and its NUL */
#define FCD_GUID_LEN      37

#define FCD_ONEC_DOC_MAX  4096

/* the path of the documents' collection, percent-encoded */
#define FCD_ONEC_PATH_LEN (3 * FCD_NAME_LEN + 64)


static int fcd_onec_guid_valid(const char *s);
static int fcd_onec_exists(const fcd_http_resp_t *resp);
static void fcd_onec_path(const char *document, char *buf, size_t size);


int
fcd_onec_deliver(fcd_t *fcd, const fcd_outbox_row_t *row, fcd_delivery_t *d)
{
    int              rc, len;
    char             doc[FCD_ONEC_DOC_MAX], ref_key[FCD_GUID_LEN];
    char             path[FCD_ONEC_PATH_LEN];
    char             url[FCD_URL_LEN + FCD_ONEC_PATH_LEN + FCD_GUID_LEN + 64];
    fcd_http_req_t   req;
    fcd_http_resp_t  resp;

    if (fcd->conf.onec_url[0] == '\0' || fcd->conf.onec_user[0] == '\0') {
        snprintf(d->error, sizeof(d->error), "no onec_url or onec_user in "
                 "the configuration");
        return FCD_DELIVERY_FAILED;
    }

    len = fcd_onec_document(row->payload, doc, sizeof(doc), ref_key,
                            sizeof(ref_key), d->error, sizeof(d->error));

    if (len < 0) {
        return FCD_DELIVERY_REFUSED;
    }

    fcd_onec_path(fcd->conf.onec_document, path, sizeof(path));

    memset(&req, 0, sizeof(fcd_http_req_t));
    req.user = fcd->conf.onec_user;
    req.password = fcd->conf.onec_password;

    if (row->attempt > 1) {
        snprintf(url, sizeof(url), "%s/odata/standard.odata/%s"
                 "(guid'%s')?$format=json", fcd->conf.onec_url, path,
                 ref_key);

        req.method = "GET";
        req.url = url;

        rc = fcd_http_request(fcd, &req, &resp);
        d->status = resp.status;

        if (rc != 0 || (resp.status != 200 && resp.status != 404)) {
            fcd_http_describe("GET document", &resp, d->error,
                              sizeof(d->error));
            fcd_http_resp_free(&resp);
            return FCD_DELIVERY_FAILED;
        }

        if (resp.status == 200) {
            goto done;
        }

        fcd_http_resp_free(&resp);
    }

    snprintf(url, sizeof(url), "%s/odata/standard.odata/%s?$format=json",
             fcd->conf.onec_url, path);

    req.method = "POST";
    req.url = url;
    req.body = doc;
    req.body_len = (size_t) len;

    rc = fcd_http_request(fcd, &req, &resp);
    d->status = resp.status;

    if (rc != 0
        || (resp.status != 200 && resp.status != 201
            && !fcd_onec_exists(&resp)))
    {
        fcd_http_describe("POST document", &resp, d->error,
                          sizeof(d->error));
        fcd_http_resp_free(&resp);
        return FCD_DELIVERY_FAILED;
    }

done:

    d->result = fcd_outbox_result(&resp);
    fcd_http_resp_free(&resp);

    if (d->result == NULL) {
        snprintf(d->error, sizeof(d->error), "out of memory");
        return FCD_DELIVERY_FAILED;
    }

    return FCD_DELIVERED;
}


int
fcd_onec_document(const char *payload, char *buf, size_t size,
    char *ref_key, size_t ref_key_size, char *err, size_t errlen)
{
    int           len;
    char          purpose[512];
    json_t       *p, *amount, *payment_id;
    fc_json_t     json;
    const char   *ref, *date, *contract, *inn, *order;
    json_error_t  jerr;

    p = json_loads(payload, 0, &jerr);

    if (p == NULL || !json_is_object(p)) {
        snprintf(err, errlen, "payload is not a JSON object: %s",
                 p == NULL ? jerr.text : "another value");
        json_decref(p);
        return -1;
    }

    ref = json_string_value(json_object_get(p, "ref_key"));
    date = json_string_value(json_object_get(p, "date"));
    contract = json_string_value(json_object_get(p, "contract_number"));
    inn = json_string_value(json_object_get(p, "org_inn"));
    order = json_string_value(json_object_get(p, "order_id"));
    amount = json_object_get(p, "amount");
    payment_id = json_object_get(p, "payment_id");

    if (ref == NULL || !fcd_onec_guid_valid(ref)) {
        snprintf(err, errlen, "payload: ref_key is not a GUID: \"%.40s\"",
                 ref ? ref : "(none)");
        goto failed;
    }

    if (date == NULL || strlen(date) != 19 || date[10] != 'T') {
        snprintf(err, errlen, "payload: date is not YYYY-MM-DDTHH:MM:SS: "
                 "\"%.40s\"", date ? date : "(none)");
        goto failed;
    }

    if (!json_is_integer(amount) || json_integer_value(amount) <= 0) {
        snprintf(err, errlen, "payload: amount is not a positive whole "
                 "number of kopecks");
        goto failed;
    }

    if (contract == NULL || inn == NULL || order == NULL
        || !(json_is_integer(payment_id) || json_is_string(payment_id)))
    {
        snprintf(err, errlen, "payload: contract_number, org_inn, order_id "
                 "and payment_id are required");
        goto failed;
    }

    snprintf(purpose, sizeof(purpose),
             "Пополнение договора %s "
             "банковской картой, заказ %s",
             contract, order);

    fc_json_init(&json, buf, size);
    fc_json_object(&json, NULL);
    fc_json_cstr(&json, "Ref_Key", ref);
    fc_json_cstr(&json, "Date", date);
    fc_json_money(&json, "СуммаДокумента",
                  json_integer_value(amount));
    fc_json_cstr(&json, "НазначениеПлатежа", purpose);
    fc_json_cstr(&json, "Контрагент_ИНН", inn);
    fc_json_cstr(&json, "НомерДоговора", contract);

    if (json_is_integer(payment_id)) {
        fc_json_int(&json, "ИдентификаторПлатежа",
                    json_integer_value(payment_id));

    } else {
        fc_json_cstr(&json, "ИдентификаторПлатежа",
                     json_string_value(payment_id));
    }

    fc_json_object_end(&json);

    len = fc_json_finish(&json);

    if (len < 0) {
        snprintf(err, errlen, "the document does not fit in %zu bytes",
                 size);
        goto failed;
    }

    snprintf(ref_key, ref_key_size, "%s", ref);
    json_decref(p);

    return len;

failed:

    json_decref(p);

    return -1;
}


/* 8-4-4-4-12 hexadecimal digits: the key goes into a URL as it is */

static int
fcd_onec_guid_valid(const char *s)
{
    size_t  i;

    if (strlen(s) != FCD_GUID_LEN - 1) {
        return 0;
    }

    for (i = 0; i < FCD_GUID_LEN - 1; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }

        } else if (!((s[i] >= '0' && s[i] <= '9')
                     || (s[i] >= 'a' && s[i] <= 'f')
                     || (s[i] >= 'A' && s[i] <= 'F')))
        {
            return 0;
        }
    }

    return 1;
}


/* 1C refuses a second document with the same Ref_Key */

static int
fcd_onec_exists(const fcd_http_resp_t *resp)
{
    if (resp->status == 409) {
        return 1;
    }

    return resp->status == 400 && resp->body != NULL
           && (strstr(resp->body, "already exists") != NULL
               || strstr(resp->body, "уже существует") != NULL);
}


/*
 * "Document_<kind>", percent-encoded: the kind is Cyrillic, and a URL
 * carries only ASCII.
 */

static void
fcd_onec_path(const char *document, char *buf, size_t size)
{
    size_t               n;
    const unsigned char *p;
    static const char    hex[] = "0123456789ABCDEF";

    n = (size_t) snprintf(buf, size, "Document_");

    for (p = (const unsigned char *) document; *p != '\0'; p++) {
        if (n + 4 > size) {
            break;
        }

        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
            || *p == '_' || *p == '~')
        {
            buf[n++] = (char) *p;
            continue;
        }

        buf[n++] = '%';
        buf[n++] = hex[*p >> 4];
        buf[n++] = hex[*p & 0x0f];
    }

    buf[n] = '\0';
}

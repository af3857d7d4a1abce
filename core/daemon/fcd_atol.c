/*
 * Delivering a receipt to the cloud cash register (ATOL Online v4).
 *
 * One attempt is three steps, all under <atol_url>:
 *
 *     POST /getToken               {"login","pass"} -> {"token"}
 *     POST /<group>/sell           the receipt       -> {"uuid"}
 *     GET  /<group>/report/<uuid>  until "done"      -> the fiscal data
 *
 * The token lives 24 hours; it is kept in memory and renewed after
 * FCD_ATOL_TOKEN_TTL_MS, or at once when the cash register says it is
 * no good (HTTP 401, or an error about the token), after which the
 * call is made once more.
 *
 * The receipt's external_id is our idempotency key ("receipt:<payment
 * id>", chosen by PostgreSQL): the cash register answers a second sell
 * with the same external_id with the first one's uuid and prints no
 * second receipt.  So an attempt that fails anywhere, a report still
 * "wait" after report_poll_max polls included, is simply retried later
 * from the start, and the retry finds the receipt that was made.
 *
 * Done means the report says "done"; its text is the row's result, and
 * fc_outbox_done() stores the fiscal attributes on the payment.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fc_date.h"
#include "fc_json.h"
#include "fc_receipt.h"
#include "fcd.h"


/* between two checks for a stop request while waiting for a report, ms */
#define FCD_ATOL_SLEEP_SLICE_MS  100

#define FCD_ATOL_UUID_LEN        128


static int fcd_atol_get_token(fcd_t *fcd, fcd_delivery_t *d);
static int fcd_atol_call(fcd_t *fcd, fcd_http_req_t *req,
    fcd_http_resp_t *resp, fcd_delivery_t *d, const char *what);
static int fcd_atol_token_refused(const fcd_http_resp_t *resp);
static const char *fcd_atol_status(json_t *answer);
static void fcd_atol_error(const char *what, json_t *answer,
    const fcd_http_resp_t *resp, fcd_delivery_t *d);
static int fcd_atol_sleep(fcd_t *fcd, int64_t ms);


int
fcd_atol_deliver(fcd_t *fcd, const fcd_outbox_row_t *row, fcd_delivery_t *d)
{
    int              len;
    char             body[FC_RECEIPT_JSON_MAX], uuid[FCD_ATOL_UUID_LEN];
    char             url[FCD_URL_LEN + FCD_NAME_LEN + FCD_ATOL_UUID_LEN + 32];
    json_t          *answer;
    int64_t          poll;
    const char      *status, *s;
    fcd_http_req_t   req;
    fcd_http_resp_t  resp;
    const fcd_conf_t *conf;

    conf = &fcd->conf;

    if (conf->atol_url[0] == '\0' || conf->atol_login[0] == '\0'
        || conf->atol_password[0] == '\0' || conf->atol_group[0] == '\0')
    {
        snprintf(d->error, sizeof(d->error), "atol_url, atol_login, "
                 "atol_password_file and atol_group must all be "
                 "configured");
        return FCD_DELIVERY_FAILED;
    }

    if (conf->company_inn[0] == '\0' || conf->company_sno[0] == '\0'
        || conf->company_email[0] == '\0'
        || conf->company_payment_address[0] == '\0')
    {
        snprintf(d->error, sizeof(d->error), "company_inn, company_sno, "
                 "company_email and company_payment_address must all be "
                 "configured");
        return FCD_DELIVERY_FAILED;
    }

    len = fcd_atol_sell_request(conf, row->payload, body, sizeof(body),
                                d->error, sizeof(d->error));

    if (len < 0) {
        return FCD_DELIVERY_REFUSED;
    }

    /* sell */

    snprintf(url, sizeof(url), "%s/%s/sell", conf->atol_url,
             conf->atol_group);

    memset(&req, 0, sizeof(fcd_http_req_t));
    req.method = "POST";
    req.url = url;
    req.body = body;
    req.body_len = (size_t) len;

    if (fcd_atol_call(fcd, &req, &resp, d, "sell") != 0) {
        return FCD_DELIVERY_FAILED;
    }

    answer = json_loads(resp.body, 0, NULL);
    s = json_string_value(json_object_get(answer, "uuid"));

    /* a repeated external_id may come back as a conflict with the uuid */
    if (s == NULL || s[0] == '\0' || strlen(s) >= sizeof(uuid)
        || strpbrk(s, "/?#% ") != NULL
        || !((resp.status >= 200 && resp.status < 300)
             || resp.status == 409))
    {
        fcd_atol_error("sell", answer, &resp, d);
        json_decref(answer);
        fcd_http_resp_free(&resp);
        return FCD_DELIVERY_FAILED;
    }

    memcpy(uuid, s, strlen(s) + 1);
    json_decref(answer);
    fcd_http_resp_free(&resp);

    fc_log(FC_LOG_DEBUG, "outbox %lld: sell accepted as %s",
           (long long) row->id, uuid);

    /* report */

    snprintf(url, sizeof(url), "%s/%s/report/%s", conf->atol_url,
             conf->atol_group, uuid);

    memset(&req, 0, sizeof(fcd_http_req_t));
    req.method = "GET";
    req.url = url;

    for (poll = 1; poll <= conf->report_poll_max; poll++) {

        if (fcd_atol_sleep(fcd, conf->report_poll_ms) != 0) {
            snprintf(d->error, sizeof(d->error), "stopped while waiting "
                     "for the report of %s", uuid);
            return FCD_DELIVERY_FAILED;
        }

        if (fcd_atol_call(fcd, &req, &resp, d, "report") != 0) {
            return FCD_DELIVERY_FAILED;
        }

        answer = json_loads(resp.body, 0, NULL);
        status = fcd_atol_status(answer);

        if (resp.status >= 200 && resp.status < 300 && status != NULL
            && strcmp(status, "done") == 0)
        {
            json_decref(answer);

            /* the report as it came: its sums keep their decimals */
            d->result = resp.body;
            resp.body = NULL;

            return FCD_DELIVERED;
        }

        if (resp.status < 200 || resp.status >= 300 || status == NULL
            || strcmp(status, "wait") != 0)
        {
            fcd_atol_error("report", answer, &resp, d);
            json_decref(answer);
            fcd_http_resp_free(&resp);
            return FCD_DELIVERY_FAILED;
        }

        json_decref(answer);
        fcd_http_resp_free(&resp);
    }

    snprintf(d->error, sizeof(d->error), "report of %s still \"wait\" after "
             "%lld polls", uuid, (long long) conf->report_poll_max);

    return FCD_DELIVERY_FAILED;
}


int
fcd_atol_sell_request(const fcd_conf_t *conf, const char *payload,
    char *buf, size_t size, char *err, size_t errlen)
{
    int            len;
    char           msg[256];
    json_t        *p, *amount;
    int64_t        day;
    const char    *date;
    fc_receipt_t   r;
    json_error_t   jerr;

    p = json_loads(payload, 0, &jerr);

    if (p == NULL || !json_is_object(p)) {
        snprintf(err, errlen, "payload is not a JSON object: %s",
                 p == NULL ? jerr.text : "another value");
        json_decref(p);
        return -1;
    }

    memset(&r, 0, sizeof(fc_receipt_t));
    r.external_id = json_string_value(json_object_get(p, "external_id"));
    r.timestamp = json_string_value(json_object_get(p, "timestamp"));
    r.client_email = json_string_value(json_object_get(p, "email"));
    r.item_name = json_string_value(json_object_get(p, "item_name"));
    date = json_string_value(json_object_get(p, "payment_date"));
    amount = json_object_get(p, "amount");

    if (r.external_id == NULL || r.timestamp == NULL
        || r.client_email == NULL || r.item_name == NULL || date == NULL)
    {
        snprintf(err, errlen, "payload: external_id, timestamp, email, "
                 "item_name and payment_date must be strings");
        json_decref(p);
        return -1;
    }

    if (!json_is_integer(amount)) {
        snprintf(err, errlen, "payload: amount is not a whole number of "
                 "kopecks");
        json_decref(p);
        return -1;
    }

    if (fc_date_parse(date, strlen(date), &day) != 0) {
        snprintf(err, errlen, "payload: payment_date is not YYYY-MM-DD: "
                 "\"%.32s\"", date);
        json_decref(p);
        return -1;
    }

    r.amount = json_integer_value(amount);
    r.vat = fc_vat_find(&conf->vat, day);

    if (r.vat == NULL) {
        snprintf(err, errlen, "no vat entry of the configuration is in "
                 "force on payment_date %s", date);
        json_decref(p);
        return -1;
    }

    r.callback_url = "";
    r.company_email = conf->company_email;
    r.company_sno = conf->company_sno;
    r.company_inn = conf->company_inn;
    r.payment_address = conf->company_payment_address;

    len = fc_receipt_sell_json(&r, buf, size, msg, sizeof(msg));

    if (len < 0) {
        snprintf(err, errlen, "payload: %s", msg);
    }

    json_decref(p);

    return len;
}


void
fcd_atol_forget_token(fcd_t *fcd)
{
    explicit_bzero(fcd->atol_token, sizeof(fcd->atol_token));
    fcd->atol_token_at = 0;
}


/*
 * Makes req with the token, getting one first if there is none or it
 * is old, and once more with a new one if the cash register refuses
 * it.  Returns 0 with an answer in resp (any status), or -1 with the
 * reason in d->error and nothing to free.
 */

static int
fcd_atol_call(fcd_t *fcd, fcd_http_req_t *req, fcd_http_resp_t *resp,
    fcd_delivery_t *d, const char *what)
{
    int   try;
    char  header[FCD_ATOL_TOKEN_LEN + 16];

    for (try = 0; try < 2; try++) {

        if (fcd->atol_token[0] == '\0'
            || fcd_now_ms() - fcd->atol_token_at >= FCD_ATOL_TOKEN_TTL_MS)
        {
            if (fcd_atol_get_token(fcd, d) != 0) {
                return -1;
            }
        }

        snprintf(header, sizeof(header), "Token: %s", fcd->atol_token);
        req->headers[0] = header;
        req->headers[1] = NULL;

        if (fcd_http_request(fcd, req, resp) != 0) {
            d->status = resp->status;
            fcd_http_describe(what, resp, d->error, sizeof(d->error));
            fcd_http_resp_free(resp);
            explicit_bzero(header, sizeof(header));
            req->headers[0] = NULL;
            return -1;
        }

        d->status = resp->status;

        if (try == 0 && fcd_atol_token_refused(resp)) {
            fc_log(FC_LOG_INFO, "the cash register refused its token on "
                   "%s, getting a new one", what);
            fcd_atol_forget_token(fcd);
            fcd_http_resp_free(resp);
            continue;
        }

        break;
    }

    /* the header was on this stack: req must not point at it */
    explicit_bzero(header, sizeof(header));
    req->headers[0] = NULL;

    return 0;
}


/* 0 with a new token in fcd, or -1 with the reason in d->error */

static int
fcd_atol_get_token(fcd_t *fcd, fcd_delivery_t *d)
{
    int              len, rc;
    char             url[FCD_URL_LEN + 16];
    char             body[2 * FCD_PASSWORD_LEN + FCD_NAME_LEN + 64];
    json_t          *answer;
    fc_json_t        json;
    const char      *token;
    fcd_http_req_t   req;
    fcd_http_resp_t  resp;

    fcd_atol_forget_token(fcd);

    fc_json_init(&json, body, sizeof(body));
    fc_json_object(&json, NULL);
    fc_json_cstr(&json, "login", fcd->conf.atol_login);
    fc_json_cstr(&json, "pass", fcd->conf.atol_password);
    fc_json_object_end(&json);
    len = fc_json_finish(&json);

    if (len < 0) {
        explicit_bzero(body, sizeof(body));
        snprintf(d->error, sizeof(d->error), "getToken: the login does not "
                 "fit in the request");
        return -1;
    }

    snprintf(url, sizeof(url), "%s/getToken", fcd->conf.atol_url);

    memset(&req, 0, sizeof(fcd_http_req_t));
    req.method = "POST";
    req.url = url;
    req.body = body;
    req.body_len = (size_t) len;

    rc = fcd_http_request(fcd, &req, &resp);
    explicit_bzero(body, sizeof(body));
    d->status = resp.status;

    if (rc != 0) {
        fcd_http_describe("getToken", &resp, d->error, sizeof(d->error));
        fcd_http_resp_free(&resp);
        return -1;
    }

    answer = json_loads(resp.body, 0, NULL);
    token = json_string_value(json_object_get(answer, "token"));

    if (resp.status < 200 || resp.status >= 300 || token == NULL
        || token[0] == '\0' || strlen(token) >= sizeof(fcd->atol_token)
        || strpbrk(token, "\r\n") != NULL)
    {
        fcd_atol_error("getToken", answer, &resp, d);
        json_decref(answer);
        fcd_http_resp_free(&resp);
        return -1;
    }

    memcpy(fcd->atol_token, token, strlen(token) + 1);
    fcd->atol_token_at = fcd_now_ms();

    /* the answer held the token too */
    json_decref(answer);
    explicit_bzero(resp.body, resp.body_len);
    fcd_http_resp_free(&resp);

    fc_log(FC_LOG_DEBUG, "got a cash register token");

    return 0;
}


/* 401, or an error that speaks of the token: expired or unknown */

static int
fcd_atol_token_refused(const fcd_http_resp_t *resp)
{
    if (resp->status == 401) {
        return 1;
    }

    if (resp->body == NULL || strstr(resp->body, "\"error\"") == NULL) {
        return 0;
    }

    return strstr(resp->body, "oken") != NULL
           || strstr(resp->body, "окен") != NULL;
}


static const char *
fcd_atol_status(json_t *answer)
{
    return json_string_value(json_object_get(answer, "status"));
}


/*
 * The reason an answer is not what was wanted: the cash register's own
 * error text if it gave one, else the status and the start of the body.
 */

static void
fcd_atol_error(const char *what, json_t *answer, const fcd_http_resp_t *resp,
    fcd_delivery_t *d)
{
    json_t      *error;
    const char  *text, *status;

    error = json_object_get(answer, "error");
    text = json_string_value(json_object_get(error, "text"));
    status = fcd_atol_status(answer);

    if (text != NULL) {
        snprintf(d->error, sizeof(d->error), "%s: http %ld, status %s, "
                 "error %lld: %.300s", what, resp->status,
                 status ? status : "none",
                 (long long) json_integer_value(json_object_get(error,
                                                                "code")),
                 text);
        return;
    }

    if (status != NULL && resp->status >= 200 && resp->status < 300) {
        snprintf(d->error, sizeof(d->error), "%s: status \"%.32s\"", what,
                 status);
        return;
    }

    fcd_http_describe(what, resp, d->error, sizeof(d->error));
}


/*
 * Waits ms, in slices, so that a stop request does not wait out a long
 * poll interval.  The signals are blocked here: a stop is seen through
 * fcd->stop_requested().  0, or -1 if a stop was requested.
 */

static int
fcd_atol_sleep(fcd_t *fcd, int64_t ms)
{
    int64_t          slice;
    struct timespec  ts;

    while (ms > 0) {
        if (fcd->stop_requested != NULL && fcd->stop_requested()) {
            return -1;
        }

        slice = ms < FCD_ATOL_SLEEP_SLICE_MS ? ms : FCD_ATOL_SLEEP_SLICE_MS;
        ts.tv_sec = 0;
        ts.tv_nsec = (long) slice * 1000000;
        nanosleep(&ts, NULL);
        ms -= slice;
    }

    return 0;
}

/*
 * fcd's HTTP client: libcurl's easy interface, blocking, one request at
 * a time.
 *
 * Blocking is what the daemon wants here: a delivery holds its outbox
 * row locked in an open transaction until the answer is recorded, and
 * there is nothing else for the loop to do meanwhile.  What keeps a
 * blocking call from hanging for good is the pair of timeouts
 * (FCD_HTTP_CONNECT_TIMEOUT_MS to connect, FCD_HTTP_TIMEOUT_MS for the
 * whole exchange); CURLOPT_NOSIGNAL keeps libcurl away from SIGALRM,
 * since the daemon's signals are its own.
 *
 * The service URLs come from the configuration only: proxies named in
 * the environment are ignored, redirects are not followed, and only
 * http and https are spoken.  One handle is kept, so that the
 * connection to a service is reused from one delivery to the next.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcd.h"


/* this much of an answer's body is quoted in last_error and the log */
#define FCD_HTTP_QUOTE  200


static size_t fcd_http_write(char *data, size_t size, size_t nmemb,
    void *arg);


int
fcd_http_request(fcd_t *fcd, const fcd_http_req_t *req,
    fcd_http_resp_t *resp)
{
    int                 i;
    long                status;
    CURL               *c;
    CURLcode            rc;
    struct curl_slist  *headers, *h;

    memset(resp, 0, sizeof(fcd_http_resp_t));

    if (fcd->curl == NULL) {
        fcd->curl = curl_easy_init();

        if (fcd->curl == NULL) {
            snprintf(resp->error, sizeof(resp->error),
                     "curl_easy_init() failed");
            return -1;
        }

    } else {
        curl_easy_reset(fcd->curl);
    }

    c = fcd->curl;

    /* no "Expect: 100-continue": the services answer a POST at once */
    headers = curl_slist_append(NULL, "Expect:");

    if (headers != NULL && req->body != NULL) {
        h = curl_slist_append(headers,
                              "Content-Type: application/json; "
                              "charset=utf-8");
        headers = (h != NULL) ? h : headers;
    }

    if (headers != NULL) {
        h = curl_slist_append(headers, "Accept: application/json");
        headers = (h != NULL) ? h : headers;
    }

    for (i = 0; headers != NULL && req->headers[i] != NULL; i++) {
        h = curl_slist_append(headers, req->headers[i]);

        if (h == NULL) {
            curl_slist_free_all(headers);
            headers = NULL;
        }
    }

    if (headers == NULL) {
        snprintf(resp->error, sizeof(resp->error), "out of memory");
        return -1;
    }

    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) FCD_HTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long) FCD_HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "fcd");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, resp->error);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fcd_http_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);

    if (req->body != NULL) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long) req->body_len);

    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }

    if (req->user != NULL) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, req->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, req->password);
    }

    rc = curl_easy_perform(c);

    /* the handle keeps the password until reset: it goes now */
    if (req->user != NULL) {
        curl_easy_setopt(c, CURLOPT_PASSWORD, "");
    }

    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);

    if (resp->too_long) {
        snprintf(resp->error, sizeof(resp->error), "the answer is longer "
                 "than %d bytes", FCD_HTTP_BODY_MAX);
        return -1;
    }

    if (rc != CURLE_OK) {
        if (resp->error[0] == '\0') {
            snprintf(resp->error, sizeof(resp->error), "%s",
                     curl_easy_strerror(rc));
        }

        return -1;
    }

    status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;

    if (resp->body == NULL) {
        resp->body = calloc(1, 1);

        if (resp->body == NULL) {
            snprintf(resp->error, sizeof(resp->error), "out of memory");
            return -1;
        }
    }

    return 0;
}


void
fcd_http_resp_free(fcd_http_resp_t *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}


void
fcd_http_describe(const char *what, const fcd_http_resp_t *resp,
    char *buf, size_t size)
{
    int     n;
    size_t  i, len;

    if (resp->status == 0) {
        snprintf(buf, size, "%s: %s", what, resp->error);
        return;
    }

    len = resp->body_len < FCD_HTTP_QUOTE ? resp->body_len : FCD_HTTP_QUOTE;

    n = snprintf(buf, size, "%s: http %ld%s%.*s", what, resp->status,
                 len ? ": " : "", (int) len, resp->body ? resp->body : "");

    if (n < 0) {
        return;
    }

    /* one line: a body's line breaks would split the log line */
    for (i = 0; buf[i] != '\0'; i++) {
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t') {
            buf[i] = ' ';
        }
    }
}


void
fcd_http_close(fcd_t *fcd)
{
    if (fcd->curl != NULL) {
        curl_easy_cleanup(fcd->curl);
        fcd->curl = NULL;
    }
}


/* collects the body, NUL-terminated, up to FCD_HTTP_BODY_MAX */

static size_t
fcd_http_write(char *data, size_t size, size_t nmemb, void *arg)
{
    char             *p;
    size_t            n;
    fcd_http_resp_t  *resp = arg;

    n = size * nmemb;

    if (n > FCD_HTTP_BODY_MAX - resp->body_len) {
        resp->too_long = 1;
        return 0;
    }

    p = realloc(resp->body, resp->body_len + n + 1);

    if (p == NULL) {
        return 0;
    }

    memcpy(p + resp->body_len, data, n);
    resp->body = p;
    resp->body_len += n;
    resp->body[resp->body_len] = '\0';

    return n;
}


/*
 * The acquiring bank, seen from nginx: calls to the bank's API and the
 * bank's signed notifications.
 *
 * A call to the bank is a step that an fc_api() answer asks for with
 * "bank": {"method", "request", "then", "state"}.  nginx adds the
 * terminal key and the Token (T-Bank's signature: the root scalar fields
 * and the password, sorted by name, values concatenated, SHA-256), and
 * POSTs it through an in-memory subrequest to the internal location
 * /_bank/v2/<method>, which proxies to the bank's upstream; the worker
 * never blocks on the bank.  The answer goes back to fc_api(then, ...).
 *
 * A notification is checked against the Token in constant time before
 * PostgreSQL sees any of it; only then does fc_api('bank_notification')
 * apply it, and the bank gets "OK" after the commit.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_fc_module.h"
#include "ngx_http_fc_api.h"

#include <fc_tbank.h>


#define NGX_HTTP_FC_BANK_ANSWER_MAX  65536


static ngx_int_t ngx_http_fc_bank_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc);
static void ngx_http_fc_bank_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_fc_bank_body_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static char *ngx_http_fc_bank_secret(ngx_http_request_t *r,
    const char *name);


static ngx_str_t  ngx_http_fc_bank_body_name = ngx_string("fc_bank_body");


/*
 * Signs the request that the SQL answer prepared and sends it to the
 * bank.  The request continues in ngx_http_fc_bank_resume() once the
 * subrequest is done, whatever its outcome.
 */
void
ngx_http_fc_bank_call(ngx_http_fc_sql_t *s)
{
    u_char                      *p;
    char                        *text, *key, *password;
    char                         token[FC_TBANK_TOKEN_LEN];
    json_t                      *bank, *method, *req;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_str_t                    uri;
    const char                  *m;
    ngx_http_request_t          *r, *sr;
    ngx_http_post_subrequest_t  *ps;

    r = s->ctx->request;

    bank = json_object_get(s->res, "bank");
    method = json_object_get(bank, "method");
    req = json_object_get(bank, "request");

    m = json_is_string(method) ? json_string_value(method) : "";

    if (m[0] == '\0' || strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "abcdefghijklmnopqrstuvwxyz") != strlen(m)
        || strlen(m) > 32 || !json_is_object(req)
        || !json_is_string(json_object_get(bank, "then")))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fc_api asked for a bad bank call on \"%V\"", &r->uri);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    key = ngx_http_fc_bank_secret(r, "tbank_terminal_key");
    password = ngx_http_fc_bank_secret(r, "tbank_password");

    if (key == NULL || password == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "\"fc_secret tbank_terminal_key\" and "
                      "\"fc_secret tbank_password\" are required for "
                      "bank calls");
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "bank_unavailable",
                                   "card payments are not configured");
        return;
    }

    json_object_set_new(req, "TerminalKey", json_string(key));
    json_object_del(req, "Token");

    if (fc_tbank_token(req, password, token) != 0) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the bank request could not be signed");
        return;
    }

    json_object_set_new(req, "Token", json_string(token));

    text = json_dumps(req, JSON_COMPACT);
    if (text == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    len = ngx_strlen(text);
    s->bank_body.data = ngx_pnalloc(r->pool, len);
    if (s->bank_body.data == NULL) {
        free(text);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    ngx_memcpy(s->bank_body.data, text, len);
    s->bank_body.len = len;
    free(text);

    uri.data = ngx_pnalloc(r->pool, sizeof("/_bank/v2/") - 1 + strlen(m));
    if (uri.data == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    p = ngx_cpymem(uri.data, "/_bank/v2/", sizeof("/_bank/v2/") - 1);
    p = ngx_cpymem(p, m, strlen(m));
    uri.len = p - uri.data;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    ps->handler = ngx_http_fc_bank_done;
    ps->data = s;

    s->bank_status = 0;
    s->bank_answer.len = 0;

    rc = ngx_http_subrequest(r, &uri, NULL, &sr, ps,
                             NGX_HTTP_SUBREQUEST_IN_MEMORY
                             |NGX_HTTP_SUBREQUEST_WAITED);

    if (rc != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the bank could not be called");
        return;
    }

    r->write_event_handler = ngx_http_fc_bank_resume;
}


/*
 * Keeps what the bank answered.  A failure of nginx itself (the bank
 * refused the connection, timed out) leaves bank_status at 0.
 */
static ngx_int_t
ngx_http_fc_bank_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_fc_sql_t  *s = data;

    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (rc != NGX_OK || sr->upstream == NULL
        || sr->upstream->state == NULL
        || sr->upstream->state->status == 0)
    {
        s->bank_status = 0;
        return rc;
    }

    s->bank_status = sr->headers_out.status;

    len = 0;
    for (cl = sr->out; cl; cl = cl->next) {
        b = cl->buf;
        if (b && b->pos) {
            len += b->last - b->pos;
        }
    }

    if (len == 0 || len > NGX_HTTP_FC_BANK_ANSWER_MAX) {
        return rc;
    }

    s->bank_answer.data = ngx_pnalloc(s->ctx->request->pool, len);
    if (s->bank_answer.data == NULL) {
        return rc;
    }

    len = 0;
    for (cl = sr->out; cl; cl = cl->next) {
        b = cl->buf;
        if (b && b->pos) {
            ngx_memcpy(s->bank_answer.data + len, b->pos, b->last - b->pos);
            len += b->last - b->pos;
        }
    }

    s->bank_answer.len = len;

    return rc;
}


static void
ngx_http_fc_bank_resume(ngx_http_request_t *r)
{
    json_t             *bank, *answer, *then;
    const char         *route;
    ngx_http_fc_ctx_t  *ctx;
    ngx_http_fc_sql_t  *s;

    r->write_event_handler = ngx_http_request_empty_handler;

    ctx = ngx_http_fc_get_ctx(r);
    s = ctx->data;

    bank = json_object_get(s->res, "bank");
    then = json_object_get(bank, "then");

    answer = NULL;
    if (s->bank_answer.len) {
        answer = json_loadb((char *) s->bank_answer.data, s->bank_answer.len,
                            0, NULL);
    }

    if (answer == NULL && s->bank_status != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "the bank answered %ui without JSON", s->bank_status);
    }

    json_object_set_new(s->req, "bank", answer ? answer : json_null());
    json_object_set_new(s->req, "bank_status",
                        json_integer(s->bank_status));
    json_object_set(s->req, "state",
                    json_object_get(bank, "state")
                    ? json_object_get(bank, "state") : json_null());

    route = ngx_http_fc_pstrdup(r->pool, json_string_value(then));

    if (route == NULL
        || strspn(route, "abcdefghijklmnopqrstuvwxyz_") != strlen(route)
        || ngx_http_fc_sql_call(s, route) != NGX_OK)
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
    }
}


/*
 * POST /bank/v1/tbank/notification.  Nothing of an unsigned or wrongly
 * signed notification reaches PostgreSQL: it gets 403 and changes
 * nothing.  A good one goes to fc_api() with token_ok, which only
 * nginx can set.
 */
void
ngx_http_fc_bank_notification(ngx_http_fc_ctx_t *ctx)
{
    int                  rc;
    char                *key, *password;
    ngx_http_request_t  *r;
    ngx_http_fc_sql_t   *s;

    r = ctx->request;

    key = ngx_http_fc_bank_secret(r, "tbank_terminal_key");
    password = ngx_http_fc_bank_secret(r, "tbank_password");

    if (key == NULL || password == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "a bank notification came, but \"fc_secret "
                      "tbank_password\" is not configured");
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "card payments are not configured");
        return;
    }

    rc = fc_tbank_token_verify(ctx->body, password);

    if (rc != 1) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "bank notification with a bad token from %V",
                      &r->connection->addr_text);
        ngx_http_fc_finalize_error(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "the notification's Token is wrong");
        return;
    }

    s = ngx_http_fc_sql_create(ctx);
    if (s == NULL) {
        return;
    }

    json_object_set_new(s->req, "token_ok", json_true());
    json_object_set_new(s->req, "terminal_key", json_string(key));

    ngx_http_fc_sql_start(s);
}


/* a secret as a C string from the request pool, or NULL */
static char *
ngx_http_fc_bank_secret(ngx_http_request_t *r, const char *name)
{
    u_char     *p;
    ngx_str_t  *v;

    v = ngx_http_fc_secret(r, name);
    if (v == NULL) {
        return NULL;
    }

    p = ngx_pnalloc(r->pool, v->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, v->data, v->len);
    p[v->len] = '\0';

    return (char *) p;
}


/* $fc_bank_body: the signed request, for proxy_set_body in /_bank/ */
static ngx_int_t
ngx_http_fc_bank_body_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_fc_ctx_t  *ctx;
    ngx_http_fc_sql_t  *s;

    ctx = ngx_http_fc_get_ctx(r->main);

    if (ctx == NULL || ctx->data == NULL || ctx->route == NULL
        || ctx->route->handler != ngx_http_fc_sql_route)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    s = ctx->data;

    v->data = s->bank_body.data;
    v->len = s->bank_body.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_fc_bank_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_fc_bank_body_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_fc_bank_body_variable;

    return NGX_OK;
}

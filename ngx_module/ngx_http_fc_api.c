
/*
 * The API handlers of ngx_http_fc_module.
 *
 * Most routes are one call to the SQL function fc_api(route, request):
 * the business rules, the organization scoping and the validation live
 * next to the data, in one transaction.  This file turns an HTTP request
 * into the request JSON, runs the steps the answer asks for (a password
 * check in the thread pool, Redis write-through commands, a delay after
 * failed logins) and sends the answer.
 *
 * Authorization at the pump is the exception: it decides in Redis first
 * (one Lua script over the contract's keys) and records the decision in
 * PostgreSQL before answering.  See docs/processing.md.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ngx_http_fc_module.h"
#include "ngx_http_fc_api.h"
#include "ngx_fc_pg.h"
#include "ngx_fc_redis.h"

#include <fc_pan.h>
#include <fc_password.h>
#include <fc_tz.h>


#define NGX_HTTP_FC_SHA256_HEX      64
#define NGX_HTTP_FC_MAX_DELAY       10000   /* ms */

/* bounds that keep the Lua arithmetic exact: see docs/processing.md */
#define NGX_HTTP_FC_MAX_VOLUME      10000000LL          /* ml */
#define NGX_HTTP_FC_MAX_PRICE       10000000LL          /* kop per unit */
#define NGX_HTTP_FC_MAX_AMOUNT      1000000000000LL     /* kop */


typedef struct {
    ngx_http_fc_ctx_t         *ctx;
    json_t                    *lookup;      /* terminal, card, product */
    json_t                    *term;
    json_t                    *card;
    json_t                    *decision;
    json_t                    *response;
    const char                *txn_id;
    const char                *product;
    const char                *product_group;
    const char                *product_unit;
    char                       pan_masked[24];
    char                       auth_id[37];
    char                       pan_key[NGX_HTTP_FC_SHA256_HEX + 16];
    int64_t                    unit_price;
    int64_t                    volume;
    int64_t                    amount;
    int64_t                    contract;
    time_t                     now;        /* the moment of the decision */
    ngx_uint_t                 held;
} ngx_http_fc_pos_t;


static ngx_int_t ngx_http_fc_sql_build(ngx_http_fc_sql_t *s);
static void ngx_http_fc_sql_done(ngx_fc_pg_query_t *q);
static void ngx_http_fc_sql_step(ngx_http_fc_sql_t *s);
static void ngx_http_fc_sql_verify(void *data);
static void ngx_http_fc_sql_verified(void *data);
static void ngx_http_fc_sql_redis(ngx_http_fc_sql_t *s);
static void ngx_http_fc_sql_redis_done(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_sql_finish(ngx_http_fc_sql_t *s);
static void ngx_http_fc_sql_delay_handler(ngx_event_t *ev);
static void ngx_http_fc_sql_send(ngx_http_fc_sql_t *s);
static void ngx_http_fc_sql_cleanup(void *data);
static ngx_int_t ngx_http_fc_redis_json(ngx_http_request_t *r,
    json_t *args, ngx_fc_redis_cmd_t *cmd);
static ngx_int_t ngx_http_fc_redis_tag(json_t *args, ngx_str_t *tag);
static void ngx_http_fc_pg_error(ngx_http_request_t *r,
    ngx_fc_pg_query_t *q);

static ngx_int_t ngx_http_fc_pos_validate(ngx_http_fc_pos_t *p);
static void ngx_http_fc_pos_lookup_done(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_pos_decide(ngx_http_fc_pos_t *p);
static void ngx_http_fc_pos_decided(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_pos_record(ngx_http_fc_pos_t *p);
static void ngx_http_fc_pos_recorded(ngx_fc_pg_query_t *q);
static void ngx_http_fc_pos_release(ngx_http_fc_pos_t *p,
    ngx_uint_t status);
static void ngx_http_fc_pos_released(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_pos_cleanup(void *data);

static json_t *ngx_http_fc_str_json(ngx_str_t *s);
static json_t *ngx_http_fc_time_json(time_t t);
static ngx_int_t ngx_http_fc_uuid(char *out);
static ngx_int_t ngx_http_fc_sha256_hex(u_char *data, size_t len,
    u_char *out);
static json_t *ngx_http_fc_query_json(ngx_http_request_t *r);
static ngx_int_t ngx_http_fc_bearer(ngx_http_request_t *r, ngx_str_t *token);
static ngx_int_t ngx_http_fc_get_int(ngx_http_request_t *r, json_t *obj,
    const char *field, int64_t min, int64_t max, ngx_uint_t required,
    int64_t *out);
static const char *ngx_http_fc_get_text(ngx_http_request_t *r,
    json_t *obj, const char *field, size_t maxlen, const char *allowed,
    ngx_uint_t quote);


void
ngx_http_fc_sql_route(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_fc_sql_t  *s;

    s = ngx_http_fc_sql_create(ctx);
    if (s == NULL) {
        return;
    }

    ngx_http_fc_sql_start(s);
}


/*
 * Prepares the SQL call of a route: the request JSON, with its cleanup.
 * Answers 500 and returns NULL on failure.  A handler may add fields to
 * s->req (what only nginx can vouch for) before ngx_http_fc_sql_start().
 */
ngx_http_fc_sql_t *
ngx_http_fc_sql_create(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_request_t  *r;
    ngx_pool_cleanup_t  *cln;
    ngx_http_fc_sql_t   *s;

    r = ctx->request;

    s = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_sql_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (s == NULL || cln == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return NULL;
    }

    cln->handler = ngx_http_fc_sql_cleanup;
    cln->data = s;

    s->ctx = ctx;
    ctx->data = s;

    switch (ngx_http_fc_sql_build(s)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_http_fc_finalize_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                   "query: a parameter is not UTF-8 text "
                                   "or holds a NUL byte");
        return NULL;

    default:
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return NULL;
    }

    return s;
}


void
ngx_http_fc_sql_start(ngx_http_fc_sql_t *s)
{
    if (ngx_http_fc_sql_call(s, (const char *) s->ctx->route->name.data)
        != NGX_OK)
    {
        ngx_http_fc_finalize_error(s->ctx->request,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


/*
 * The request as the SQL API sees it (docs/processing.md).  Tokens are
 * passed as their SHA-256 only: PostgreSQL stores hashes, and a token
 * never reaches its logs.
 */
static ngx_int_t
ngx_http_fc_sql_build(ngx_http_fc_sql_t *s)
{
    u_char               hex[NGX_HTTP_FC_SHA256_HEX + 1];
    time_t               now;
    json_t              *req, *params, *body, *v;
    ngx_str_t            name, value, token;
    ngx_uint_t           i;
    ngx_http_request_t  *r;
    ngx_http_fc_ctx_t   *ctx;

    ctx = s->ctx;
    r = ctx->request;

    req = json_object();
    params = json_array();
    if (req == NULL || params == NULL) {
        json_decref(params);
        json_decref(req);
        return NGX_ERROR;
    }

    s->req = req;

    for (i = 0; i < ctx->nparams; i++) {
        json_array_append_new(params, ngx_http_fc_str_json(&ctx->params[i]));
    }

    json_object_set_new(req, "route",
                        json_stringn((char *) ctx->route->name.data,
                                     ctx->route->name.len));
    json_object_set_new(req, "method",
                        ngx_http_fc_str_json(&r->method_name));
    json_object_set_new(req, "path", ngx_http_fc_str_json(&r->uri));
    json_object_set_new(req, "params", params);
    v = ngx_http_fc_query_json(r);
    if (v == NULL) {
        return NGX_DECLINED;
    }

    json_object_set_new(req, "query", v);
    /* a password goes to the thread pool, never into SQL parameters */
    if (ctx->body && json_object_get(ctx->body, "password")) {
        body = json_copy(ctx->body);
        if (body == NULL) {
            return NGX_ERROR;
        }

        json_object_del(body, "password");
        json_object_set_new(req, "body", body);

    } else {
        json_object_set_new(req, "body",
                            ctx->body ? json_incref(ctx->body)
                                      : json_null());
    }
    json_object_set_new(req, "ip",
                        ngx_http_fc_str_json(&r->connection->addr_text));

    /* a file upload travels as base64: its bytes may be any encoding */
    if (ctx->route->flags & NGX_HTTP_FC_RAW_BODY) {
        ngx_str_t  b64;

        b64.len = ngx_base64_encoded_length(ctx->raw.len);
        b64.data = ngx_pnalloc(r->pool, b64.len);
        if (b64.data == NULL) {
            return NGX_ERROR;
        }

        ngx_encode_base64(&b64, &ctx->raw);

        json_object_set_new(req, "body_base64",
                            json_stringn((char *) b64.data, b64.len));

        value.len = 0;
        if (r->headers_in.content_type) {
            value = r->headers_in.content_type->value;
        }

        json_object_set_new(req, "content_type",
                            ngx_http_fc_str_json(&value));
    }

    ngx_str_set(&name, "fc_session");

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies, &name,
                                          &value)
        != NGX_DECLINED
        && value.len > 0
        && ngx_http_fc_sha256_hex(value.data, value.len, hex) == NGX_OK)
    {
        json_object_set_new(req, "session",
                            json_stringn((char *) hex,
                                         NGX_HTTP_FC_SHA256_HEX));
    } else {
        json_object_set_new(req, "session", json_null());
    }

    value = ngx_http_fc_header(r, "X-CSRF-Token");
    json_object_set_new(req, "csrf",
                        value.len ? ngx_http_fc_str_json(&value)
                                  : json_null());

    if (ngx_http_fc_bearer(r, &token) == NGX_OK
        && ngx_http_fc_sha256_hex(token.data, token.len, hex) == NGX_OK)
    {
        json_object_set_new(req, "bearer",
                            json_stringn((char *) hex,
                                         NGX_HTTP_FC_SHA256_HEX));
    } else {
        json_object_set_new(req, "bearer", json_null());
    }

    value = ngx_http_fc_header(r, "Idempotency-Key");
    json_object_set_new(req, "idempotency_key",
                        value.len ? ngx_http_fc_str_json(&value)
                                  : json_null());

    if (ngx_http_fc_test_now(r, &now) == NGX_OK) {
        json_object_set_new(req, "now", ngx_http_fc_time_json(now));
    } else {
        json_object_set_new(req, "now", json_null());
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_fc_sql_call(ngx_http_fc_sql_t *s, const char *route)
{
    char                *text;
    size_t               len;
    const char         **params;
    ngx_fc_pg_query_t   *q;
    ngx_http_request_t  *r;

    r = s->ctx->request;

    q = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    params = ngx_pcalloc(r->pool, 2 * sizeof(char *));
    if (q == NULL || params == NULL) {
        return NGX_ERROR;
    }

    text = json_dumps(s->req, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);
    params[1] = ngx_pnalloc(r->pool, len + 1);
    if (params[1] == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy((char *) params[1], text, len + 1);
    free(text);

    params[0] = route;

    q->request = r;
    q->sql = "SELECT fc_api($1, $2::jsonb)";
    q->nparams = 2;
    q->params = params;
    q->handler = ngx_http_fc_sql_done;
    q->data = s;

    return ngx_fc_pg_send(q);
}


static void
ngx_http_fc_sql_done(ngx_fc_pg_query_t *q)
{
    json_t              *res;
    json_error_t         err;
    ngx_http_fc_sql_t   *s;
    ngx_http_request_t  *r;

    s = q->data;
    r = s->ctx->request;

    if (q->rc != NGX_OK) {
        ngx_http_fc_pg_error(r, q);
        return;
    }

    if (PQntuples(q->result) != 1 || PQgetisnull(q->result, 0, 0)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fc_api returned no answer for \"%V\"", &r->uri);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    res = json_loads(PQgetvalue(q->result, 0, 0), 0, &err);

    if (res == NULL || !json_is_object(res)) {
        json_decref(res);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fc_api returned bad JSON for \"%V\"", &r->uri);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    json_decref(s->res);
    s->res = res;
    s->redis_next = 0;

    ngx_http_fc_sql_step(s);
}


/*
 * Maps a failed query to an answer: FCnnn is an error raised on purpose
 * by the SQL API (HTTP status nnn, the code in HINT); anything else is
 * our bug, logged with its SQLSTATE and answered with 500.
 */
static void
ngx_http_fc_pg_error(ngx_http_request_t *r, ngx_fc_pg_query_t *q)
{
    char        *state, *hint, *msg;
    ngx_int_t    status;

    if (q->rc != NGX_DECLINED || q->result == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "the database is unavailable, "
                                   "retry later");
        return;
    }

    state = PQresultErrorField(q->result, PG_DIAG_SQLSTATE);
    hint = PQresultErrorField(q->result, PG_DIAG_MESSAGE_HINT);
    msg = PQresultErrorField(q->result, PG_DIAG_MESSAGE_PRIMARY);

    if (state && state[0] == 'F' && state[1] == 'C') {
        status = ngx_atoi((u_char *) state + 2, 3);

        if (status >= 400 && status <= 599) {
            ngx_http_fc_finalize_error(r, status,
                                       hint ? hint : "error",
                                       msg ? msg : "error");
            return;
        }
    }

    if (state && ngx_strncmp(state, "40001", 5) == 0) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "a concurrent change, retry");
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "sql error %s on \"%V\": %s", state ? state : "-",
                  &r->uri, msg ? msg : "-");

    ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "internal_error",
                               "the server could not complete the request");
}


/*
 * Runs what the SQL answer asks for, in order: a password check, then
 * the Redis commands, then the answer itself.
 */
static void
ngx_http_fc_sql_step(ngx_http_fc_sql_t *s)
{
    json_t              *vp, *pw, *hash;
    ngx_http_request_t  *r;

    r = s->ctx->request;

    vp = json_object_get(s->res, "verify_password");

    if (vp != NULL && !s->verified) {
        s->verified = 1;

        pw = s->ctx->body ? json_object_get(s->ctx->body, "password")
                          : NULL;
        hash = json_object_get(vp, "hash");

        s->password = (u_char *) ngx_http_fc_pstrdup(r->pool,
                          json_is_string(pw) ? json_string_value(pw) : "");
        s->hash = (u_char *) ngx_http_fc_pstrdup(r->pool,
                      json_is_string(hash) ? json_string_value(hash) : "");

        if (s->password == NULL || s->hash == NULL
            || ngx_http_fc_thread_run(r, ngx_http_fc_sql_verify,
                                      ngx_http_fc_sql_verified, s)
               != NGX_OK)
        {
            ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error",
                                       "could not check the password");
        }

        return;
    }

    if (json_object_get(s->res, "bank") != NULL && !s->bank_called) {
        s->bank_called = 1;
        ngx_http_fc_bank_call(s);
        return;
    }

    if (vp != NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fc_api asked twice for a password check on \"%V\"",
                      &r->uri);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    ngx_http_fc_sql_redis(s);
}


/* runs in a thread: PBKDF2 is deliberately slow */
static void
ngx_http_fc_sql_verify(void *data)
{
    ngx_http_fc_sql_t  *s = data;

    s->password_ok = (fc_password_verify((char *) s->password,
                                         (char *) s->hash) == 1);
}


static void
ngx_http_fc_sql_verified(void *data)
{
    ngx_http_fc_sql_t  *s = data;

    u_char              *p;
    json_t              *vp, *then, *state;
    const char          *route;
    ngx_http_request_t  *r;

    r = s->ctx->request;

    /* the password must not stay in memory longer than needed */
    for (p = s->password; *p; p++) {
        *p = '\0';
    }

    vp = json_object_get(s->res, "verify_password");
    then = json_object_get(vp, "then");
    state = json_object_get(vp, "state");

    route = json_is_string(then) ? json_string_value(then) : NULL;

    if (route == NULL || route[0] == '\0'
        || strspn(route, "abcdefghijklmnopqrstuvwxyz_") != strlen(route))
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    json_object_set_new(s->req, "password_ok",
                        json_boolean(s->password_ok));
    json_object_set(s->req, "state", state ? state : json_null());

    route = ngx_http_fc_pstrdup(r->pool, route);

    if (route == NULL || ngx_http_fc_sql_call(s, route) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


/*
 * Write-through: the SQL answer lists the Redis commands that bring the
 * hot state in line with what was just committed.  Consecutive plain
 * commands on keys of one hash tag go together through apply.lua, so a
 * decision at the pump never sees half of a change; a SCRIPT command is
 * atomic by itself.  If Redis fails, the change is on record but not
 * yet in force at the pumps, and the client is told so with a 503.
 */
static void
ngx_http_fc_sql_redis(ngx_http_fc_sql_t *s)
{
    char                *text;
    size_t               i, j, n;
    json_t              *cmds, *args, *batch;
    ngx_str_t            tag, next;
    ngx_fc_redis_cmd_t  *cmd;
    ngx_http_request_t  *r;

    r = s->ctx->request;
    cmds = json_object_get(s->res, "redis");

    if (!json_is_array(cmds) || s->redis_next >= json_array_size(cmds)
        || s->redis_failed)
    {
        ngx_http_fc_sql_finish(s);
        return;
    }

    n = json_array_size(cmds);
    i = s->redis_next;
    args = json_array_get(cmds, i);

    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    if (cmd == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    j = i + 1;

    if (ngx_http_fc_redis_tag(args, &tag) == NGX_OK) {
        while (j < n
               && ngx_http_fc_redis_tag(json_array_get(cmds, j), &next)
                  == NGX_OK
               && next.len == tag.len
               && ngx_strncmp(next.data, tag.data, tag.len) == 0)
        {
            j++;
        }
    }

    s->redis_next = j;

    if (j == i + 1) {
        if (ngx_http_fc_redis_json(r, args, cmd) != NGX_OK) {
            goto bad;
        }

    } else {
        batch = json_array();
        if (batch == NULL) {
            goto bad;
        }

        for ( /* void */ ; i < j; i++) {
            json_array_append(batch, json_array_get(cmds, i));
        }

        text = json_dumps(batch, JSON_COMPACT);
        json_decref(batch);

        if (text == NULL) {
            goto bad;
        }

        batch = json_pack("[s,s,i,O,s]", "SCRIPT", "apply", 1,
                          json_array_get(args, 1), text);
        free(text);

        if (batch == NULL || ngx_http_fc_redis_json(r, batch, cmd) != NGX_OK)
        {
            json_decref(batch);
            goto bad;
        }

        json_decref(batch);
    }

    cmd->request = r;
    cmd->handler = ngx_http_fc_sql_redis_done;
    cmd->data = s;

    if (ngx_fc_redis_send(cmd) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }

    return;

bad:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "fc_api returned a bad redis command for \"%V\"",
                  &r->uri);
    s->redis_failed = 1;
    ngx_http_fc_sql_finish(s);
}


/*
 * The hash tag of a plain command whose arguments are all strings, for
 * grouping it with its neighbours; NGX_DECLINED for a SCRIPT command,
 * a command with a number in it, or a key without a tag.
 */
static ngx_int_t
ngx_http_fc_redis_tag(json_t *args, ngx_str_t *tag)
{
    u_char      *p, *q, *last;
    size_t       i;
    const char  *key;

    if (!json_is_array(args) || json_array_size(args) < 2) {
        return NGX_DECLINED;
    }

    for (i = 0; i < json_array_size(args); i++) {
        if (!json_is_string(json_array_get(args, i))) {
            return NGX_DECLINED;
        }
    }

    if (ngx_strcmp(json_string_value(json_array_get(args, 0)), "SCRIPT")
        == 0)
    {
        return NGX_DECLINED;
    }

    key = json_string_value(json_array_get(args, 1));
    p = (u_char *) key;
    last = p + ngx_strlen(key);

    p = ngx_strlchr(p, last, '{');
    if (p == NULL) {
        return NGX_DECLINED;
    }

    q = ngx_strlchr(p + 1, last, '}');
    if (q == NULL || q == p + 1) {
        return NGX_DECLINED;
    }

    tag->data = p + 1;
    tag->len = q - p - 1;

    return NGX_OK;
}


static void
ngx_http_fc_sql_redis_done(ngx_fc_redis_cmd_t *cmd)
{
    ngx_http_fc_sql_t  *s = cmd->data;

    if (cmd->rc != NGX_OK || cmd->reply == NULL
        || cmd->reply->type == REDIS_REPLY_ERROR)
    {
        if (cmd->rc == NGX_OK && cmd->reply) {
            ngx_log_error(NGX_LOG_ERR, s->ctx->request->connection->log, 0,
                          "redis write-through failed on \"%V\": %*s",
                          &s->ctx->request->uri,
                          (size_t) ngx_min(cmd->reply->len, 200),
                          cmd->reply->str ? cmd->reply->str : "");
        }

        s->redis_failed = 1;
    }

    ngx_http_fc_sql_redis(s);
}


/*
 * Turns ["HSET", "key", "f", "v"] or ["SCRIPT", "settle", 1, "key", ...]
 * into a Redis command; numbers become their decimal text.
 */
static ngx_int_t
ngx_http_fc_redis_json(ngx_http_request_t *r, json_t *args,
    ngx_fc_redis_cmd_t *cmd)
{
    u_char       *p;
    size_t        i, n, first;
    json_t       *v;
    const char   *s;

    if (!json_is_array(args) || json_array_size(args) == 0
        || json_array_size(args) > 4096)
    {
        return NGX_ERROR;
    }

    n = json_array_size(args);
    first = 0;

    v = json_array_get(args, 0);
    if (json_is_string(v) && ngx_strcmp(json_string_value(v), "SCRIPT") == 0)
    {
        if (n < 3 || !json_is_string(json_array_get(args, 1))
            || !json_is_integer(json_array_get(args, 2)))
        {
            return NGX_ERROR;
        }

        cmd->script = ngx_fc_redis_script_find((ngx_cycle_t *) ngx_cycle,
                          json_string_value(json_array_get(args, 1)));
        if (cmd->script == NULL) {
            return NGX_ERROR;
        }

        cmd->numkeys = json_integer_value(json_array_get(args, 2));
        first = 3;
    }

    cmd->argc = n - first;
    cmd->argv = ngx_pcalloc(r->pool, (cmd->argc + 1) * sizeof(char *));
    cmd->argvlen = ngx_pcalloc(r->pool, (cmd->argc + 1) * sizeof(size_t));
    if (cmd->argv == NULL || cmd->argvlen == NULL) {
        return NGX_ERROR;
    }

    for (i = first; i < n; i++) {
        v = json_array_get(args, i);

        if (json_is_string(v)) {
            s = json_string_value(v);
            cmd->argvlen[i - first] = json_string_length(v);
            p = ngx_pnalloc(r->pool, cmd->argvlen[i - first] + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(p, s, cmd->argvlen[i - first] + 1);

        } else if (json_is_integer(v)) {
            p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            cmd->argvlen[i - first] = ngx_sprintf(p, "%L",
                                          (int64_t) json_integer_value(v))
                                      - p;
            p[cmd->argvlen[i - first]] = '\0';

        } else {
            return NGX_ERROR;
        }

        cmd->argv[i - first] = (char *) p;
    }

    if (cmd->script && cmd->numkeys > cmd->argc) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_fc_sql_finish(ngx_http_fc_sql_t *s)
{
    json_t              *delay;
    ngx_msec_t           ms;
    ngx_http_request_t  *r;

    r = s->ctx->request;

    delay = json_object_get(s->res, "delay_ms");
    ms = json_is_integer(delay) ? (ngx_msec_t) json_integer_value(delay) : 0;

    if (ms > 0 && ms <= NGX_HTTP_FC_MAX_DELAY) {
        s->delay.handler = ngx_http_fc_sql_delay_handler;
        s->delay.data = s;
        s->delay.log = r->connection->log;
        ngx_add_timer(&s->delay, ms);
        return;
    }

    ngx_http_fc_sql_send(s);
}


static void
ngx_http_fc_sql_delay_handler(ngx_event_t *ev)
{
    ngx_connection_t   *c;
    ngx_http_fc_sql_t  *s;

    s = ev->data;
    c = s->ctx->request->connection;

    ngx_http_fc_sql_send(s);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_fc_sql_send(ngx_http_fc_sql_t *s)
{
    json_t              *status, *body, *error, *headers, *v;
    const char          *key, *type;
    ngx_uint_t           code;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    r = s->ctx->request;

    status = json_object_get(s->res, "status");
    code = json_is_integer(status) ? json_integer_value(status) : 500;

    if (code < 200 || code > 599) {
        code = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    headers = json_object_get(s->res, "headers");

    json_object_foreach(headers, key, v) {
        if (!json_is_string(v) && !json_is_integer(v)) {
            continue;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            break;
        }

        h->hash = 1;
        h->key.data = (u_char *) ngx_http_fc_pstrdup(r->pool, key);
        h->key.len = ngx_strlen(key);

        if (json_is_string(v)) {
            h->value.data = (u_char *) ngx_http_fc_pstrdup(r->pool,
                                                   json_string_value(v));
        } else {
            h->value.data = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
            if (h->value.data) {
                *ngx_sprintf(h->value.data, "%L",
                             (int64_t) json_integer_value(v)) = '\0';
            }
        }

        if (h->key.data == NULL || h->value.data == NULL) {
            h->hash = 0;
            continue;
        }

        h->value.len = ngx_strlen(h->value.data);
    }

    if (s->redis_failed) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "the change is saved but not yet in "
                                   "force at the stations; retry later");
        return;
    }

    body = json_object_get(s->res, "text");
    if (json_is_string(body)) {
        error = json_object_get(s->res, "content_type");
        type = json_is_string(error)
               ? ngx_http_fc_pstrdup(r->pool, json_string_value(error))
               : NULL;

        ngx_http_fc_send_body(r, code, type ? type : "text/plain",
                              (u_char *) ngx_http_fc_pstrdup(r->pool,
                                  json_string_value(body)),
                              json_string_length(body));
        return;
    }

    error = json_object_get(s->res, "error");
    if (error != NULL) {
        ngx_http_fc_send_json(r, code,
                              json_pack("{s:O}", "error", error));
        return;
    }

    body = json_object_get(s->res, "body");

    ngx_http_fc_send_json(r, code, body ? json_incref(body) : json_object());
}


static void
ngx_http_fc_sql_cleanup(void *data)
{
    ngx_http_fc_sql_t  *s = data;

    if (s->delay.timer_set) {
        ngx_del_timer(&s->delay);
    }

    json_decref(s->req);
    json_decref(s->res);
    s->req = NULL;
    s->res = NULL;
}


/*
 * Authorization at the pump.  Three steps, each on nginx events:
 *
 * 1. One MGET of look-up keys: the terminal by the hash of its key, the
 *    card by the HMAC of its number, the product.
 * 2. The decision: authorize.lua over the contract's keys, atomically
 *    checking status, limits and money and placing the hold.
 * 3. The record: fc_pos_authorize_record() commits the decision in
 *    PostgreSQL.  Only then does the terminal get its answer; if the
 *    write fails, the hold is released and the terminal gets 503.
 */
void
ngx_http_fc_pos_authorize(ngx_http_fc_ctx_t *ctx)
{
    u_char               hex[NGX_HTTP_FC_SHA256_HEX + 1];
    u_char               mac[EVP_MAX_MD_SIZE];
    unsigned int         maclen;
    ngx_str_t            token, *key;
    ngx_uint_t           i;
    const char          *pan;
    const char         **argv;
    size_t              *argvlen;
    ngx_http_request_t  *r;
    ngx_pool_cleanup_t  *cln;
    ngx_fc_redis_cmd_t  *cmd;
    ngx_http_fc_pos_t   *p;

    r = ctx->request;

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_pos_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (p == NULL || cln == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    p->ctx = ctx;
    ctx->data = p;
    cln->handler = ngx_http_fc_pos_cleanup;
    cln->data = p;

    if (ngx_http_fc_bearer(r, &token) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                                   "a terminal key is required: "
                                   "Authorization: Bearer <key>");
        return;
    }

    if (ngx_http_fc_pos_validate(p) != NGX_OK) {
        return;
    }

    /* Redis and PostgreSQL see one clock: the period keys, the hold's
       expiry and authorized_at all come from this moment */
    if (ngx_http_fc_test_now(r, &p->now) != NGX_OK) {
        p->now = ngx_time();
    }

    pan = json_string_value(json_object_get(ctx->body, "card_number"));

    key = ngx_http_fc_secret(r, "pan_key");
    if (key == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "no \"fc_secret pan_key\" is configured");
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "card look-up is not configured");
        return;
    }

    if (HMAC(EVP_sha256(), key->data, (int) key->len,
             (const u_char *) pan, ngx_strlen(pan), mac, &maclen)
        == NULL)
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "hmac failed");
        return;
    }

    ngx_hex_dump((u_char *) p->pan_key, mac, maclen);

    if (ngx_http_fc_sha256_hex(token.data, token.len, hex) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "hash failed");
        return;
    }

    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    argv = ngx_pcalloc(r->pool, 4 * sizeof(char *));
    argvlen = ngx_pcalloc(r->pool, 4 * sizeof(size_t));
    if (cmd == NULL || argv == NULL || argvlen == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    argv[0] = "MGET";
    argv[1] = (char *) ngx_pnalloc(r->pool, sizeof("{fc}:term:") + 64);
    argv[2] = (char *) ngx_pnalloc(r->pool, sizeof("{fc}:pan:") + 64);
    argv[3] = (char *) ngx_pnalloc(r->pool, sizeof("{fc}:prod:")
                                            + ngx_strlen(p->product));

    for (i = 1; i < 4; i++) {
        if (argv[i] == NULL) {
            ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error", "out of memory");
            return;
        }
    }

    *ngx_sprintf((u_char *) argv[1], "{fc}:term:%*s", (size_t) 64, hex)
        = '\0';
    *ngx_sprintf((u_char *) argv[2], "{fc}:pan:%*s", (size_t) (2 * maclen),
                 p->pan_key) = '\0';
    *ngx_sprintf((u_char *) argv[3], "{fc}:prod:%s", p->product) = '\0';

    for (i = 0; i < 4; i++) {
        argvlen[i] = ngx_strlen(argv[i]);
    }

    cmd->request = r;
    cmd->argc = 4;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->handler = ngx_http_fc_pos_lookup_done;
    cmd->data = p;

    if (ngx_fc_redis_send(cmd) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


/*
 * Checks every field of an authorization before anything is looked up;
 * answers 422 naming the field and returns NGX_ERROR on the first bad
 * one.
 */
static ngx_int_t
ngx_http_fc_pos_validate(ngx_http_fc_pos_t *p)
{
    json_t              *body;
    const char          *pan;
    ngx_http_request_t  *r;

    r = p->ctx->request;
    body = p->ctx->body;

    p->txn_id = ngx_http_fc_get_text(r, body, "terminal_txn_id", 64,
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "abcdefghijklmnopqrstuvwxyz"
                                     "0123456789-_.:", 1);
    if (p->txn_id == NULL) {
        return NGX_ERROR;
    }

    pan = ngx_http_fc_get_text(r, body, "card_number", 19, "0123456789",
                               0);
    if (pan == NULL) {
        return NGX_ERROR;
    }

    if (ngx_strlen(pan) < 16) {
        ngx_http_fc_finalize_error(r, 422, "validation_failed",
                                   "card_number: must be 16 to 19 digits");
        return NGX_ERROR;
    }

    if (!fc_pan_valid(pan, ngx_strlen(pan))) {
        ngx_http_fc_finalize_error(r, 422, "validation_failed",
                                   "card_number: the check digit is wrong");
        return NGX_ERROR;
    }

    if (fc_pan_mask(pan, ngx_strlen(pan), p->pan_masked,
                    sizeof(p->pan_masked)) < 0)
    {
        ngx_http_fc_finalize_error(r, 422, "validation_failed",
                                   "card_number: must be 16 to 19 digits");
        return NGX_ERROR;
    }

    p->product = ngx_http_fc_get_text(r, body, "product_code", 16,
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789-", 1);
    if (p->product == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_fc_get_int(r, body, "unit_price", 1,
                            NGX_HTTP_FC_MAX_PRICE, 1, &p->unit_price)
        != NGX_OK
        || ngx_http_fc_get_int(r, body, "requested_volume_ml", 1,
                               NGX_HTTP_FC_MAX_VOLUME, 0, &p->volume)
           != NGX_OK
        || ngx_http_fc_get_int(r, body, "requested_amount", 1,
                               NGX_HTTP_FC_MAX_AMOUNT, 0, &p->amount)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if ((p->volume == 0) == (p->amount == 0)) {
        ngx_http_fc_finalize_error(r, 422, "validation_failed",
                                   "requested_volume_ml, requested_amount: "
                                   "exactly one of them is required");
        return NGX_ERROR;
    }

    /* both are bounded above, so the product cannot overflow */
    if (p->volume != 0 && p->volume * p->unit_price < 500) {
        ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                    "requested_volume_ml: %L ml at %L "
                                    "kopecks per unit costs less than a "
                                    "kopeck", p->volume, p->unit_price);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_fc_pos_lookup_done(ngx_fc_redis_cmd_t *cmd)
{
    json_t              *prod, *grp;
    redisReply          *rep;
    ngx_http_fc_pos_t   *p;
    ngx_http_request_t  *r;

    p = cmd->data;
    r = p->ctx->request;
    rep = cmd->reply;

    if (cmd->rc != NGX_OK || rep == NULL || rep->type != REDIS_REPLY_ARRAY
        || rep->elements != 3)
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "authorization is unavailable, "
                                   "retry later");
        return;
    }

    if (rep->element[0]->type != REDIS_REPLY_STRING) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                                   "unknown terminal key");
        return;
    }

    p->term = json_loadb(rep->element[0]->str, rep->element[0]->len, 0,
                         NULL);

    if (rep->element[2]->type != REDIS_REPLY_STRING) {
        ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                    "product_code: unknown product \"%s\"",
                                    p->product);
        return;
    }

    prod = json_loadb(rep->element[2]->str, rep->element[2]->len, 0, NULL);
    grp = json_object_get(prod, "grp");
    p->product_group = ngx_http_fc_pstrdup(r->pool,
                           json_is_string(grp) ? json_string_value(grp) : "");
    grp = json_object_get(prod, "unit");
    p->product_unit = ngx_http_fc_pstrdup(r->pool,
                          json_is_string(grp) ? json_string_value(grp) : "");
    json_decref(prod);

    if (p->term == NULL || p->product_group == NULL
        || p->product_unit == NULL
        || !json_is_integer(json_object_get(p->term, "station")))
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "bad look-up data in redis");
        return;
    }

    if (rep->element[1]->type == REDIS_REPLY_STRING) {
        p->card = json_loadb(rep->element[1]->str, rep->element[1]->len, 0,
                             NULL);
    }

    if (p->card == NULL
        || !json_is_integer(json_object_get(p->card, "ctr"))
        || !json_is_integer(json_object_get(p->card, "card"))
        || !json_is_string(json_object_get(p->card, "tz")))
    {
        /* an unknown card is a decision too, recorded like any other */
        json_decref(p->card);
        p->card = NULL;
        p->decision = json_pack("{s:s,s:s,s:I,s:I,s:[]}",
                                "status", "declined",
                                "decline_code", "UNKNOWN_CARD",
                                "approved_volume_ml", (json_int_t) 0,
                                "approved_amount", (json_int_t) 0,
                                "usage");
        ngx_http_fc_pos_record(p);
        return;
    }

    ngx_http_fc_pos_decide(p);
}


static void
ngx_http_fc_pos_decide(ngx_http_fc_pos_t *p)
{
    u_char                 *b, *last;
    int64_t                 card, grp, t;
    ngx_uint_t              i, n;
    fc_tz_t                *tz;
    fc_local_t              lt;
    const char            **argv;
    size_t                 *argvlen;
    ngx_http_request_t     *r;
    ngx_fc_redis_cmd_t     *cmd;
    char                    keys[5][FC_PERIOD_KEY_LEN];
    static fc_period_t      periods[] = {
        FC_PERIOD_DAY, FC_PERIOD_WEEK, FC_PERIOD_MONTH, FC_PERIOD_QUARTER,
        FC_PERIOD_YEAR
    };

    r = p->ctx->request;

    p->contract = json_integer_value(json_object_get(p->card, "ctr"));
    card = json_integer_value(json_object_get(p->card, "card"));
    grp = json_integer_value(json_object_get(p->card, "grp"));

    tz = fc_tz_load(json_string_value(json_object_get(p->card, "tz")));
    if (tz == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "cannot load time zone \"%s\" of contract %L",
                      json_string_value(json_object_get(p->card, "tz")),
                      p->contract);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the organization's time zone is "
                                   "unknown");
        return;
    }

    t = p->now;

    if (fc_tz_local(tz, t, &lt) != 0) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "bad clock");
        return;
    }

    for (i = 0; i < 5; i++) {
        if (fc_period_key(tz, t, periods[i], keys[i], FC_PERIOD_KEY_LEN)
            < 0)
        {
            ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error", "bad clock");
            return;
        }
    }

    if (ngx_http_fc_uuid(p->auth_id) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "no randomness");
        return;
    }

    n = 5 + 22;

    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    argv = ngx_pcalloc(r->pool, n * sizeof(char *));
    argvlen = ngx_pcalloc(r->pool, n * sizeof(size_t));
    b = ngx_pnalloc(r->pool, 4096);

    if (cmd == NULL || argv == NULL || argvlen == NULL || b == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    last = b + 4096;

#define ngx_http_fc_arg(fmt, ...)                                            \
    argv[i] = (char *) b;                                                   \
    b = ngx_slprintf(b, last - 1, fmt, __VA_ARGS__);                        \
    argvlen[i] = b - (u_char *) argv[i];                                    \
    *b++ = '\0';                                                            \
    i++

    i = 0;

    ngx_http_fc_arg("{c:%L}:ctr", p->contract);
    ngx_http_fc_arg("{c:%L}:card:%L", p->contract, card);
    ngx_http_fc_arg("{c:%L}:lim:ctr", p->contract);
    ngx_http_fc_arg("{c:%L}:lim:grp:%L", p->contract, grp);
    ngx_http_fc_arg("{c:%L}:lim:card:%L", p->contract, card);

    ngx_http_fc_arg("%s", p->auth_id);
    ngx_http_fc_arg("%s",
        json_string_value(json_object_get(p->term, "id")) ?
        json_string_value(json_object_get(p->term, "id")) : "");
    ngx_http_fc_arg("%s", p->txn_id);
    ngx_http_fc_arg("%s", p->product);
    ngx_http_fc_arg("%s", p->product_group);
    ngx_http_fc_arg("%L", p->unit_price);
    ngx_http_fc_arg("%L", p->volume);
    ngx_http_fc_arg("%L", p->amount);
    ngx_http_fc_arg("%L", t);
    ngx_http_fc_arg("%04d%02d%02d", lt.year, lt.month, lt.day);
    ngx_http_fc_arg("%d", lt.weekday);
    ngx_http_fc_arg("%d", lt.hour * 60 + lt.minute);
    ngx_http_fc_arg("%L", (int64_t) json_integer_value(
                              json_object_get(p->term, "station")));
    ngx_http_fc_arg("%s",
        json_string_value(json_object_get(p->term, "network")) ?
        json_string_value(json_object_get(p->term, "network")) : "");
    ngx_http_fc_arg("%s",
        json_string_value(json_object_get(p->term, "region")) ?
        json_string_value(json_object_get(p->term, "region")) : "");
    ngx_http_fc_arg("%T", ngx_http_fc_hold_ttl(r));
    ngx_http_fc_arg("%s", keys[0]);
    ngx_http_fc_arg("%s", keys[1]);
    ngx_http_fc_arg("%s", keys[2]);
    ngx_http_fc_arg("%s", keys[3]);
    ngx_http_fc_arg("%s", keys[4]);
    ngx_http_fc_arg("%s", p->product_unit);

#undef ngx_http_fc_arg

    cmd->script = ngx_fc_redis_script_find((ngx_cycle_t *) ngx_cycle,
                                           "authorize");
    if (cmd->script == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "no \"fc_redis_script authorize\" is configured");
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "authorization is not configured");
        return;
    }

    cmd->request = r;
    cmd->numkeys = 5;
    cmd->argc = i;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->handler = ngx_http_fc_pos_decided;
    cmd->data = p;

    if (ngx_fc_redis_send(cmd) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


static void
ngx_http_fc_pos_decided(ngx_fc_redis_cmd_t *cmd)
{
    json_t              *status;
    redisReply          *rep;
    ngx_http_fc_pos_t   *p;
    ngx_http_request_t  *r;

    p = cmd->data;
    r = p->ctx->request;
    rep = cmd->reply;

    if (cmd->rc != NGX_OK || rep == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "authorization is unavailable, "
                                   "retry later");
        return;
    }

    if (rep->type != REDIS_REPLY_STRING) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "authorize.lua failed: %*s",
                      (size_t) (rep->str ? ngx_min(rep->len, 300) : 0),
                      rep->str ? rep->str : "");
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the authorization could not be "
                                   "decided");
        return;
    }

    p->decision = json_loadb(rep->str, rep->len, 0, NULL);
    status = json_object_get(p->decision, "status");

    if (!json_is_string(status)) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the authorization could not be "
                                   "decided");
        return;
    }

    /* a stored result of an earlier try carries its own auth id */
    if (json_is_string(json_object_get(p->decision, "auth_id"))) {
        ngx_cpystrn((u_char *) p->auth_id,
                    (u_char *) json_string_value(
                        json_object_get(p->decision, "auth_id")),
                    sizeof(p->auth_id));
    }

    p->held = (ngx_strcmp(json_string_value(status), "declined") != 0
               && !json_is_true(json_object_get(p->decision, "replay")));

    ngx_http_fc_pos_record(p);
}


static void
ngx_http_fc_pos_record(ngx_http_fc_pos_t *p)
{
    char                *text;
    json_t              *d, *rec, *resp, *v;
    size_t               len;
    const char         **params;
    ngx_fc_pg_query_t   *q;
    ngx_http_request_t  *r;

    r = p->ctx->request;
    d = p->decision;

    /* an unknown card: still a decision with an id of its own */
    if (p->auth_id[0] == '\0' && ngx_http_fc_uuid(p->auth_id) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "no randomness");
        return;
    }

    resp = json_pack("{s:O,s:s,s:s,s:s,s:O,s:O}",
                     "status", json_object_get(d, "status"),
                     "auth_id", p->auth_id,
                     "terminal_txn_id", p->txn_id,
                     "card", p->pan_masked,
                     "approved_volume_ml",
                     json_object_get(d, "approved_volume_ml"),
                     "approved_amount",
                     json_object_get(d, "approved_amount"));
    if (resp == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the authorization could not be "
                                   "decided");
        return;
    }

    /* a partial approval says why in "reason": it is not a decline */
    v = json_object_get(d, "decline_code");
    if (json_is_string(v)) {
        json_object_set(resp,
                        ngx_strcmp(json_string_value(
                                       json_object_get(d, "status")),
                                   "declined") == 0
                        ? "decline_code" : "reason", v);
    }

    v = json_object_get(d, "limit");
    if (json_is_object(v)) {
        json_object_set(resp, "limit", v);
    }

    p->response = resp;

    rec = json_pack("{s:s,s:O,s:s,s:O,s:s,s:s,s:I,s:I,s:I,s:O,s:O,s:O,"
                    "s:O,s:O,s:O,s:O,s:i}",
                    "auth_id", p->auth_id,
                    "terminal_id", json_object_get(p->term, "id"),
                    "terminal_txn_id", p->txn_id,
                    "station_id", json_object_get(p->term, "station"),
                    "pan_masked", p->pan_masked,
                    "product_code", p->product,
                    "unit_price", (json_int_t) p->unit_price,
                    "requested_volume_ml", (json_int_t) p->volume,
                    "requested_amount", (json_int_t) p->amount,
                    "status", json_object_get(d, "status"),
                    "decline_code",
                    json_object_get(d, "decline_code")
                    ? json_object_get(d, "decline_code") : json_null(),
                    "approved_volume_ml",
                    json_object_get(d, "approved_volume_ml"),
                    "approved_amount", json_object_get(d, "approved_amount"),
                    "usage", json_object_get(d, "usage")
                             ? json_object_get(d, "usage") : json_null(),
                    "limit_id",
                    json_object_get(json_object_get(d, "limit"), "id")
                    ? json_object_get(json_object_get(d, "limit"), "id")
                    : json_null(),
                    "response", resp,
                    "hold_ttl", (int) ngx_http_fc_hold_ttl(r));

    if (rec == NULL) {
        ngx_http_fc_pos_release(p, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    json_object_set_new(rec, "now", ngx_http_fc_time_json(p->now));

    if (p->card) {
        json_object_set(rec, "card_id", json_object_get(p->card, "card"));
        json_object_set(rec, "contract_id", json_object_get(p->card, "ctr"));
    } else {
        json_object_set_new(rec, "card_id", json_null());
        json_object_set_new(rec, "contract_id", json_null());
    }

    text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);

    q = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    params = ngx_pcalloc(r->pool, sizeof(char *));

    if (text == NULL || q == NULL || params == NULL) {
        free(text);
        ngx_http_fc_pos_release(p, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = ngx_strlen(text);
    params[0] = ngx_pnalloc(r->pool, len + 1);
    if (params[0] == NULL) {
        free(text);
        ngx_http_fc_pos_release(p, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy((char *) params[0], text, len + 1);
    free(text);

    q->request = r;
    q->sql = "SELECT fc_pos_authorize_record($1::jsonb)";
    q->nparams = 1;
    q->params = params;
    q->handler = ngx_http_fc_pos_recorded;
    q->data = p;

    if (ngx_fc_pg_send(q) != NGX_OK) {
        ngx_http_fc_pos_release(p, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


static void
ngx_http_fc_pos_recorded(ngx_fc_pg_query_t *q)
{
    json_t              *res, *resp, *id;
    ngx_http_fc_pos_t   *p;
    ngx_http_request_t  *r;

    p = q->data;
    r = p->ctx->request;

    if (q->rc != NGX_OK || PQntuples(q->result) != 1) {
        if (q->rc == NGX_DECLINED && q->result) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "recording authorization %s failed: %s",
                          p->auth_id,
                          PQresultErrorField(q->result,
                                             PG_DIAG_MESSAGE_PRIMARY));
        }

        ngx_http_fc_pos_release(p, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    res = json_loads(PQgetvalue(q->result, 0, 0), 0, NULL);
    resp = json_object_get(res, "response");
    id = json_object_get(res, "auth_id");

    if (!json_is_object(resp) || !json_is_string(id)) {
        json_decref(res);
        ngx_http_fc_pos_release(p, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    json_decref(p->response);
    p->response = json_incref(resp);

    /*
     * The record existed already: an earlier try was committed but its
     * Redis state is gone (a rebuild).  The stored answer wins; the hold
     * this try placed is released before answering.
     */
    if (p->held && ngx_strcmp(json_string_value(id), p->auth_id) != 0) {
        json_decref(res);
        ngx_http_fc_pos_release(p, NGX_HTTP_OK);
        return;
    }

    json_decref(res);

    ngx_http_fc_send_json(r, NGX_HTTP_OK, json_incref(p->response));
}


/*
 * Gives back the hold this request placed, then answers: with the stored
 * response when status is 200, else with an error of that status.  The
 * answer waits for the release so that the terminal's retry finds the
 * money free.
 */
static void
ngx_http_fc_pos_release(ngx_http_fc_pos_t *p, ngx_uint_t status)
{
    int                  argc;
    u_char              *b;
    const char         **argv;
    size_t              *argvlen;
    ngx_fc_redis_cmd_t  *cmd;
    ngx_http_request_t  *r;

    r = p->ctx->request;

    if (!p->held) {
        goto answer;
    }

    p->held = 0;

    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    argv = ngx_pcalloc(r->pool, 4 * sizeof(char *));
    argvlen = ngx_pcalloc(r->pool, 4 * sizeof(size_t));
    b = ngx_pnalloc(r->pool, 64);

    if (cmd == NULL || argv == NULL || argvlen == NULL || b == NULL) {
        goto answer;
    }

    argv[0] = (char *) b;
    argvlen[0] = ngx_sprintf(b, "{c:%L}:ctr", p->contract) - b;
    b[argvlen[0]] = '\0';
    argv[1] = p->auth_id;
    argvlen[1] = ngx_strlen(p->auth_id);

    /* a decision that is on no record must not be replayed to a retry */
    argv[2] = json_string_value(json_object_get(p->term, "id"));
    argv[3] = p->txn_id;
    argc = 2;

    if (status != NGX_HTTP_OK && argv[2] != NULL) {
        argvlen[2] = ngx_strlen(argv[2]);
        argvlen[3] = ngx_strlen(argv[3]);
        argc = 4;
    }

    cmd->script = ngx_fc_redis_script_find((ngx_cycle_t *) ngx_cycle,
                                           "release");
    if (cmd->script == NULL) {
        goto answer;
    }

    cmd->request = r;
    cmd->numkeys = 1;
    cmd->argc = argc;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->handler = ngx_http_fc_pos_released;
    cmd->data = (void *) (uintptr_t) status;

    if (ngx_fc_redis_send(cmd) == NGX_OK) {
        return;
    }

answer:

    if (status == NGX_HTTP_OK && p->response) {
        ngx_http_fc_send_json(r, NGX_HTTP_OK, json_incref(p->response));
        return;
    }

    ngx_http_fc_finalize_error(r, status,
                               status == NGX_HTTP_SERVICE_UNAVAILABLE
                               ? "service_unavailable" : "internal_error",
                               "the authorization could not be recorded; "
                               "nothing was approved");
}


static void
ngx_http_fc_pos_released(ngx_fc_redis_cmd_t *cmd)
{
    ngx_uint_t           status;
    ngx_http_fc_pos_t   *p;
    ngx_http_request_t  *r;

    r = cmd->request;
    p = ngx_http_fc_get_ctx(r)->data;
    status = (ngx_uint_t) (uintptr_t) cmd->data;

    if (cmd->rc != NGX_OK || cmd->reply == NULL
        || cmd->reply->type == REDIS_REPLY_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "releasing hold %s failed; it expires by itself",
                      p->auth_id);
    }

    if (status == NGX_HTTP_OK && p->response) {
        ngx_http_fc_send_json(r, NGX_HTTP_OK, json_incref(p->response));
        return;
    }

    ngx_http_fc_finalize_error(r, status,
                               status == NGX_HTTP_SERVICE_UNAVAILABLE
                               ? "service_unavailable" : "internal_error",
                               "the authorization could not be recorded; "
                               "nothing was approved");
}


static void
ngx_http_fc_pos_cleanup(void *data)
{
    ngx_http_fc_pos_t  *p = data;

    json_decref(p->term);
    json_decref(p->card);
    json_decref(p->decision);
    json_decref(p->response);
}


static json_t *
ngx_http_fc_str_json(ngx_str_t *s)
{
    json_t  *v;

    v = json_stringn((char *) s->data, s->len);

    /* not UTF-8: the SQL side sees an empty string and rejects it */
    return v ? v : json_string("");
}


/* a random (version 4) UUID in its text form, 36 characters and NUL */
static ngx_int_t
ngx_http_fc_uuid(char *out)
{
    u_char  rnd[16], *b;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    rnd[6] = (rnd[6] & 0x0f) | 0x40;
    rnd[8] = (rnd[8] & 0x3f) | 0x80;

    b = (u_char *) out;
    b = ngx_hex_dump(b, rnd, 4);
    *b++ = '-';
    b = ngx_hex_dump(b, rnd + 4, 2);
    *b++ = '-';
    b = ngx_hex_dump(b, rnd + 6, 2);
    *b++ = '-';
    b = ngx_hex_dump(b, rnd + 8, 2);
    *b++ = '-';
    b = ngx_hex_dump(b, rnd + 10, 6);
    *b = '\0';

    return NGX_OK;
}


/* a moment as RFC 3339 in UTC, the form fc_now() reads */
static json_t *
ngx_http_fc_time_json(time_t t)
{
    u_char     buf[sizeof("2026-12-04T10:00:00Z")], *p;
    ngx_tm_t   tm;

    ngx_gmtime(t, &tm);

    p = ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    return json_stringn((char *) buf, p - buf);
}


static ngx_int_t
ngx_http_fc_sha256_hex(u_char *data, size_t len, u_char *out)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        return NGX_ERROR;
    }

    *ngx_hex_dump(out, md, mdlen) = '\0';

    return NGX_OK;
}


/*
 * The query string as an object of unescaped strings; later keys win.
 * NULL when a name or value holds a NUL byte or is not UTF-8: no such
 * text is valid in PostgreSQL, so it is refused here with a 400.
 */
static json_t *
ngx_http_fc_query_json(ngx_http_request_t *r)
{
    u_char  *p, *last, *amp, *eq, *dst, *src, *kv[2];
    size_t   len[2];
    json_t  *obj;
    int      i;

    obj = json_object();
    if (obj == NULL || r->args.len == 0) {
        return obj;
    }

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        kv[0] = p;
        len[0] = (eq ? eq : amp) - p;
        kv[1] = eq ? eq + 1 : amp;
        len[1] = eq ? (size_t) (amp - eq - 1) : 0;

        for (i = 0; i < 2; i++) {
            dst = ngx_pnalloc(r->pool, len[i] + 1);
            if (dst == NULL) {
                json_decref(obj);
                return NULL;
            }

            src = kv[i];
            kv[i] = dst;

            /* '+' is a space in form encoding */
            {
                u_char  *q;

                for (q = src; q < src + len[i]; q++) {
                    if (*q == '+') {
                        *q = ' ';
                    }
                }
            }

            ngx_unescape_uri(&dst, &src, len[i], NGX_UNESCAPE_URI);
            len[i] = dst - kv[i];
            kv[i][len[i]] = '\0';
        }

        if (ngx_strlchr(kv[0], kv[0] + len[0], '\0')
            || ngx_strlchr(kv[1], kv[1] + len[1], '\0'))
        {
            json_decref(obj);
            return NULL;
        }

        if (len[0] > 0) {
            json_t  *v = json_stringn((char *) kv[1], len[1]);

            if (v == NULL
                || json_object_setn_new(obj, (char *) kv[0], len[0], v) != 0)
            {
                json_decref(obj);
                return NULL;
            }
        }

        p = amp + 1;
    }

    return obj;
}


static ngx_int_t
ngx_http_fc_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t  v;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    v = r->headers_in.authorization->value;

    if (v.len <= 7 || ngx_strncasecmp(v.data, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_DECLINED;
    }

    token->data = v.data + 7;
    token->len = v.len - 7;

    while (token->len && *token->data == ' ') {
        token->data++;
        token->len--;
    }

    return token->len ? NGX_OK : NGX_DECLINED;
}


const char *
ngx_http_fc_pstrdup(ngx_pool_t *pool, const char *s)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(s);

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len + 1);

    return (const char *) p;
}


/*
 * Reads an integer field in [min, max]; a missing optional field is 0.
 * Answers 422 naming the field and returns NGX_ERROR otherwise.
 */
static ngx_int_t
ngx_http_fc_get_int(ngx_http_request_t *r, json_t *obj, const char *field,
    int64_t min, int64_t max, ngx_uint_t required, int64_t *out)
{
    char    *text;
    json_t  *v;

    v = json_object_get(obj, field);

    if (v == NULL || json_is_null(v)) {
        if (!required) {
            *out = 0;
            return NGX_OK;
        }

        ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                    "%s: is required", field);
        return NGX_ERROR;
    }

    if (json_is_integer(v) && json_integer_value(v) >= min
        && json_integer_value(v) <= max)
    {
        *out = json_integer_value(v);
        return NGX_OK;
    }

    text = json_dumps(v, JSON_ENCODE_ANY|JSON_COMPACT);

    ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                "%s: must be a whole number from %L to %L, "
                                "got %s", field, min, max,
                                text ? text : "?");
    free(text);

    return NGX_ERROR;
}


/*
 * Reads a required string field of 1 to maxlen characters from the
 * allowed set.  Answers 422 naming the field, and quoting the value
 * unless it may be a card number, and returns NULL otherwise.
 */
static const char *
ngx_http_fc_get_text(ngx_http_request_t *r, json_t *obj, const char *field,
    size_t maxlen, const char *allowed, ngx_uint_t quote)
{
    char        *text;
    json_t      *v;
    size_t       len;
    const char  *s;

    v = json_object_get(obj, field);

    if (v == NULL || json_is_null(v)) {
        ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                    "%s: is required", field);
        return NULL;
    }

    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);

        if (len >= 1 && len <= maxlen && strlen(s) == len
            && strspn(s, allowed) == len)
        {
            return ngx_http_fc_pstrdup(r->pool, s);
        }
    }

    text = json_dumps(v, JSON_ENCODE_ANY|JSON_COMPACT);

    /* quote at most 80 bytes, never cutting a UTF-8 character */
    len = text ? strlen(text) : 0;
    if (len > 80) {
        len = 80;
        while (len > 0 && ((u_char) text[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    ngx_http_fc_finalize_errorf(r, 422, "validation_failed",
                                "%s: must be a string of 1 to %uz "
                                "characters from \"%s\"%s%*s",
                                field, maxlen, allowed,
                                quote ? ", got " : "",
                                (size_t) (quote ? len : 0),
                                text ? text : "");
    free(text);

    return NULL;
}

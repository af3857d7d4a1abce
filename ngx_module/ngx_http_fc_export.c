
/*
 * The transactions export of ngx_http_fc_module: GET
 * /export/v1/transactions with an organization's API key, for the
 * accounting systems that load a client's transactions on a schedule
 * (docs/export.md).
 *
 * One request takes four steps on nginx events:
 *
 * 1. fc_api export_transactions checks the key (unknown or revoked,
 *    network, scope) and the query, and logs the use;
 * 2. Redis counts the key's requests of this minute (INCR, and EXPIRE
 *    on the first); over the key's rate the answer is 429;
 * 3. fc_export_plan() fixes the page: how many rows, where it ends, the
 *    next cursor.  The page holds only rows whose order is final, so
 *    the cursor can go out in a header before the first row is read;
 * 4. the page's rows come in chunks of NGX_HTTP_FC_EXPORT_CHUNK, one
 *    query each (fc_export_rows), and each chunk is formatted and
 *    written out with chunked transfer encoding before the next one is
 *    asked for.
 *
 * A slow client therefore never makes nginx hold more than one chunk:
 * when the output filter cannot send it all, the next query waits for
 * the write event that drains it.  Once the header is out, a status can
 * no longer tell the client about a failure, so a failure ends the
 * response by closing the connection; a client that got no complete
 * answer (no closing bracket, a short chunked body) retries with the
 * same cursor.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_fc_module.h"
#include "ngx_http_fc_api.h"
#include "ngx_fc_pg.h"
#include "ngx_fc_redis.h"

#include <fc_cp1251.h>
#include <fc_date.h>
#include <fc_money.h>
#include <fc_vat.h>


#define NGX_HTTP_FC_EXPORT_CHUNK       500     /* rows per query */
#define NGX_HTTP_FC_EXPORT_WINDOW      60      /* s, of the rate limit */
#define NGX_HTTP_FC_EXPORT_BUF_MIN     65536   /* bytes of the first buffer */
#define NGX_HTTP_FC_EXPORT_POS_LEN     24      /* an xid8 or id as text */
#define NGX_HTTP_FC_EXPORT_LIMIT_MAX   10000   /* rows in a page */

#define NGX_HTTP_FC_EXPORT_JSON        0
#define NGX_HTTP_FC_EXPORT_CSV         1
#define NGX_HTTP_FC_EXPORT_CSV1251     2

/* the columns of fc_export_rows() */
#define NGX_HTTP_FC_COL_XID            0
#define NGX_HTTP_FC_COL_ID             1
#define NGX_HTTP_FC_COL_AT             2
#define NGX_HTTP_FC_COL_OPERATION      3
#define NGX_HTTP_FC_COL_CONTRACT_ID    4
#define NGX_HTTP_FC_COL_CONTRACT       5
#define NGX_HTTP_FC_COL_CARD_ID        6
#define NGX_HTTP_FC_COL_CARD           7
#define NGX_HTTP_FC_COL_DRIVER         8
#define NGX_HTTP_FC_COL_PLATE          9
#define NGX_HTTP_FC_COL_STATION_ID     10
#define NGX_HTTP_FC_COL_STATION        11
#define NGX_HTTP_FC_COL_ADDRESS        12
#define NGX_HTTP_FC_COL_PRODUCT_CODE   13
#define NGX_HTTP_FC_COL_PRODUCT        14
#define NGX_HTTP_FC_COL_VOLUME         15
#define NGX_HTTP_FC_COL_PRICE          16
#define NGX_HTTP_FC_COL_AMOUNT         17
#define NGX_HTTP_FC_COL_N              18

/* every column may grow six times as a JSON escape "\u001f" */
#define NGX_HTTP_FC_EXPORT_ESCAPE      6
#define NGX_HTTP_FC_EXPORT_ROW_EXTRA   1024    /* names, numbers, commas */


typedef struct {
    ngx_http_request_t        *request;
    ngx_fc_pg_query_t         *query;
    ngx_fc_redis_cmd_t        *cmd;
    json_t                    *answer;      /* the key check's */
    fc_vat_table_t             vat;
    ngx_uint_t                 format;
    int64_t                    key_id;
    int64_t                    rate_limit;  /* requests per minute */
    ngx_uint_t                 rows;        /* in the page */
    ngx_uint_t                 sent;        /* rows formatted so far */
    ngx_uint_t                 has_more;
    const char                *params[6];
    char                      *scope;       /* JSON text */
    char                       size[NGX_INT_T_LEN + 1];
    char                       chunk[NGX_INT_T_LEN + 1];
    char                       after_xid[NGX_HTTP_FC_EXPORT_POS_LEN];
    char                       after_id[NGX_HTTP_FC_EXPORT_POS_LEN];
    char                       last_xid[NGX_HTTP_FC_EXPORT_POS_LEN];
    char                       last_id[NGX_HTTP_FC_EXPORT_POS_LEN];
    u_char                    *rate_key;
    ngx_str_t                  cursor;      /* of the next call */

    /* the chunk being formatted; sent and drained before the next */
    u_char                    *out;
    size_t                     out_len;
    size_t                     out_size;
    ngx_chain_t               *free;
    ngx_chain_t               *busy;
} ngx_http_fc_export_t;


static void ngx_http_fc_export_checked(ngx_fc_pg_query_t *q);
static ngx_int_t ngx_http_fc_export_setup(ngx_http_fc_export_t *e,
    json_t *body);
static ngx_int_t ngx_http_fc_export_vat(ngx_http_fc_export_t *e,
    const char *lines);
static void ngx_http_fc_export_count(ngx_http_fc_export_t *e);
static void ngx_http_fc_export_counted(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_export_expired(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_export_admit(ngx_http_fc_export_t *e,
    long long count);
static void ngx_http_fc_export_plan(ngx_http_fc_export_t *e);
static void ngx_http_fc_export_planned(ngx_fc_pg_query_t *q);
static ngx_int_t ngx_http_fc_export_send_header(ngx_http_fc_export_t *e);
static void ngx_http_fc_export_next(ngx_http_fc_export_t *e);
static void ngx_http_fc_export_chunk(ngx_fc_pg_query_t *q);
static ngx_int_t ngx_http_fc_export_row(ngx_http_fc_export_t *e,
    PGresult *res, int row);
static ngx_int_t ngx_http_fc_export_epilogue(ngx_http_fc_export_t *e);
static ngx_int_t ngx_http_fc_export_flush(ngx_http_fc_export_t *e,
    ngx_uint_t last);
static ngx_uint_t ngx_http_fc_export_pending(ngx_http_request_t *r);
static ngx_int_t ngx_http_fc_export_wait(ngx_http_request_t *r);
static void ngx_http_fc_export_write(ngx_http_request_t *r);
static void ngx_http_fc_export_pg_error(ngx_http_fc_export_t *e,
    ngx_fc_pg_query_t *q, const char *what);
static ngx_int_t ngx_http_fc_export_reserve(ngx_http_fc_export_t *e,
    size_t len);
static u_char *ngx_http_fc_export_json_str(u_char *p, PGresult *res,
    int row, int col);
static u_char *ngx_http_fc_export_csv_str(u_char *p, u_char *s, size_t len,
    u_char sep);
static ngx_int_t ngx_http_fc_export_int(PGresult *res, int row, int col,
    int64_t *out);
static ngx_int_t ngx_http_fc_export_copy_pos(char *dst, PGresult *res,
    int row, int col);
static ngx_int_t ngx_http_fc_export_add_header(ngx_http_request_t *r,
    const char *key, u_char *value, size_t len);
static void ngx_http_fc_export_cleanup(void *data);


/* the address tags the buffers of the export */
static ngx_uint_t  ngx_http_fc_export_tag;


/* the fields of a row in both CSV forms, in order */
static const char  *ngx_http_fc_export_csv_fields[] = {
    "id", "at", "operation", "contract", "card", "driver", "vehicle_plate",
    "station", "station_address", "product_code", "product", "volume",
    "price", "amount", "discount", "vat_rate", "vat", NULL
};


void
ngx_http_fc_export_transactions(ngx_http_fc_ctx_t *ctx)
{
    char                  *text;
    size_t                 len;
    ngx_http_request_t    *r;
    ngx_pool_cleanup_t    *cln;
    ngx_http_fc_sql_t     *s;
    ngx_http_fc_export_t  *e;

    r = ctx->request;

    /* the request JSON of the SQL API: the key's hash, the query, the ip */

    s = ngx_http_fc_sql_create(ctx);
    if (s == NULL) {
        return;
    }

    e = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_export_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (e == NULL || cln == NULL) {
        goto failed;
    }

    cln->handler = ngx_http_fc_export_cleanup;
    cln->data = e;

    e->request = r;
    ctx->data = e;

    /* the phases must not run again when the socket turns writable */
    r->write_event_handler = ngx_http_request_empty_handler;

    e->query = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    e->cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    if (e->query == NULL || e->cmd == NULL) {
        goto failed;
    }

    text = json_dumps(s->req, JSON_COMPACT);
    if (text == NULL) {
        goto failed;
    }

    len = ngx_strlen(text);
    e->params[1] = ngx_pnalloc(r->pool, len + 1);
    if (e->params[1] == NULL) {
        free(text);
        goto failed;
    }

    ngx_memcpy((char *) e->params[1], text, len + 1);
    free(text);

    e->params[0] = (const char *) ctx->route->name.data;

    e->query->request = r;
    e->query->sql = "SELECT fc_api($1, $2::jsonb)";
    e->query->nparams = 2;
    e->query->params = e->params;
    e->query->handler = ngx_http_fc_export_checked;
    e->query->data = e;

    if (ngx_fc_pg_send(e->query) != NGX_OK) {
        goto failed;
    }

    return;

failed:

    ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "internal_error", "out of memory");
}


/* step 1 done: the key and the query were checked */
static void
ngx_http_fc_export_checked(ngx_fc_pg_query_t *q)
{
    json_t                *res, *status, *error, *code, *message;
    json_error_t           err;
    ngx_http_request_t    *r;
    ngx_http_fc_export_t  *e;

    e = q->data;
    r = e->request;

    if (q->rc != NGX_OK) {
        ngx_http_fc_export_pg_error(e, q, "the key check");
        return;
    }

    res = NULL;

    if (PQntuples(q->result) == 1 && !PQgetisnull(q->result, 0, 0)) {
        res = json_loads(PQgetvalue(q->result, 0, 0), 0, &err);
    }

    ngx_fc_pg_free_result(q);

    if (res == NULL || !json_is_object(res)) {
        json_decref(res);
        goto bad;
    }

    e->answer = res;

    status = json_object_get(res, "status");

    if (!json_is_integer(status)) {
        goto bad;
    }

    if (json_integer_value(status) != NGX_HTTP_OK) {
        error = json_object_get(res, "error");
        code = json_object_get(error, "code");
        message = json_object_get(error, "message");

        if (json_integer_value(status) < 400
            || json_integer_value(status) > 599
            || !json_is_string(code) || !json_is_string(message))
        {
            goto bad;
        }

        ngx_http_fc_finalize_error(r, json_integer_value(status),
                                   json_string_value(code),
                                   json_string_value(message));
        return;
    }

    if (ngx_http_fc_export_setup(e, json_object_get(res, "body"))
        != NGX_OK)
    {
        goto bad;
    }

    ngx_http_fc_export_count(e);

    return;

bad:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "fc_api returned a bad answer for \"%V\"", &r->uri);
    ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "internal_error",
                               "the server could not complete the request");
}


/*
 * Takes what the key check answered (see fc_route_export_transactions):
 * the key, the format, the page size, the rate, the VAT table, where the
 * page starts and the scope.  NGX_ERROR when something is missing.
 */
static ngx_int_t
ngx_http_fc_export_setup(ngx_http_fc_export_t *e, json_t *body)
{
    char        *text;
    size_t       len;
    json_t      *v, *after;
    const char  *format;

    v = json_object_get(body, "key_id");
    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    e->key_id = json_integer_value(v);

    v = json_object_get(body, "format");
    format = json_is_string(v) ? json_string_value(v) : "";

    if (ngx_strcmp(format, "json") == 0) {
        e->format = NGX_HTTP_FC_EXPORT_JSON;

    } else if (ngx_strcmp(format, "csv") == 0) {
        e->format = NGX_HTTP_FC_EXPORT_CSV;

    } else if (ngx_strcmp(format, "csv1251") == 0) {
        e->format = NGX_HTTP_FC_EXPORT_CSV1251;

    } else {
        return NGX_ERROR;
    }

    v = json_object_get(body, "limit");
    if (!json_is_integer(v) || json_integer_value(v) < 1
        || json_integer_value(v) > NGX_HTTP_FC_EXPORT_LIMIT_MAX)
    {
        return NGX_ERROR;
    }

    ngx_sprintf((u_char *) e->size, "%L%Z", (int64_t) json_integer_value(v));

    v = json_object_get(body, "rate_limit");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        return NGX_ERROR;
    }

    e->rate_limit = json_integer_value(v);

    v = json_object_get(body, "vat_rates");
    if (!json_is_string(v)
        || ngx_http_fc_export_vat(e, json_string_value(v)) != NGX_OK)
    {
        return NGX_ERROR;
    }

    after = json_object_get(body, "after");
    v = json_object_get(after, "xid");

    if (!json_is_string(v)
        || json_string_length(v) >= NGX_HTTP_FC_EXPORT_POS_LEN)
    {
        return NGX_ERROR;
    }

    ngx_cpystrn((u_char *) e->after_xid, (u_char *) json_string_value(v),
                NGX_HTTP_FC_EXPORT_POS_LEN);

    v = json_object_get(after, "id");
    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    ngx_sprintf((u_char *) e->after_id, "%L%Z",
                (int64_t) json_integer_value(v));

    v = json_object_get(body, "scope");
    if (!json_is_object(v)) {
        return NGX_ERROR;
    }

    text = json_dumps(v, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);
    e->scope = ngx_pnalloc(e->request->pool, len + 1);

    if (e->scope == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(e->scope, text, len + 1);
    free(text);

    return NGX_OK;
}


/* the dated VAT table from fc_meta's vat_rates: fc_vat.h lines */
static ngx_int_t
ngx_http_fc_export_vat(ngx_http_fc_export_t *e, const char *lines)
{
    char         err[128];
    const char  *p, *nl;

    fc_vat_table_init(&e->vat);

    for (p = lines; *p; p = nl) {
        nl = strchr(p, '\n');
        if (nl == NULL) {
            nl = p + ngx_strlen(p);
        }

        if (nl > p
            && fc_vat_table_add(&e->vat, p, nl - p, err, sizeof(err)) != 0)
        {
            ngx_log_error(NGX_LOG_ERR, e->request->connection->log, 0,
                          "bad vat_rates entry in fc_meta: %s", err);
            return NGX_ERROR;
        }

        if (*nl == '\n') {
            nl++;
        }
    }

    if (e->vat.n == 0) {
        ngx_log_error(NGX_LOG_ERR, e->request->connection->log, 0,
                      "fc_meta has no vat_rates");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Step 2: the rate limit, a counter per key and minute,
 * {fc}:export:rate:<key id>:<minutes since 1970>.  The first request of
 * a minute sets the counter to expire, twice the window later so that
 * a slow clock between workers never resets a live one.
 */
static void
ngx_http_fc_export_count(ngx_http_fc_export_t *e)
{
    const char          *argv[2];
    ngx_http_request_t  *r;

    r = e->request;

    e->rate_key = ngx_pnalloc(r->pool, sizeof("{fc}:export:rate::")
                                       + 2 * NGX_INT64_LEN);
    if (e->rate_key == NULL) {
        goto failed;
    }

    ngx_sprintf(e->rate_key, "{fc}:export:rate:%L:%T%Z", e->key_id,
                ngx_time() / NGX_HTTP_FC_EXPORT_WINDOW);

    argv[0] = "INCR";
    argv[1] = (const char *) e->rate_key;

    e->cmd->request = r;
    e->cmd->argc = 2;
    e->cmd->argv = argv;
    e->cmd->handler = ngx_http_fc_export_counted;
    e->cmd->data = e;

    if (ngx_fc_redis_send(e->cmd) == NGX_OK) {
        return;
    }

failed:

    ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "internal_error", "out of memory");
}


static void
ngx_http_fc_export_counted(ngx_fc_redis_cmd_t *cmd)
{
    const char            *argv[3];
    ngx_http_request_t    *r;
    ngx_http_fc_export_t  *e;

    e = cmd->data;
    r = e->request;

    if (cmd->rc != NGX_OK || cmd->reply == NULL
        || cmd->reply->type != REDIS_REPLY_INTEGER)
    {
        if (cmd->rc == NGX_OK && cmd->reply
            && cmd->reply->type == REDIS_REPLY_ERROR)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "export rate count for api key %L failed: %*s",
                          e->key_id, (size_t) ngx_min(cmd->reply->len, 200),
                          cmd->reply->str ? cmd->reply->str : "");
        }

        ngx_http_fc_finalize_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "the rate limiter is unavailable, "
                                   "retry later");
        return;
    }

    if (cmd->reply->integer != 1) {
        ngx_http_fc_export_admit(e, cmd->reply->integer);
        return;
    }

    argv[0] = "EXPIRE";
    argv[1] = (const char *) e->rate_key;
    argv[2] = "120";

    cmd->argc = 3;
    cmd->argv = argv;
    cmd->handler = ngx_http_fc_export_expired;

    if (ngx_fc_redis_send(cmd) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


/*
 * A lost EXPIRE leaves a counter of a past minute in Redis for good,
 * which costs a few bytes and never blocks anyone: the next minute has
 * a key of its own.  So the request goes on.
 */
static void
ngx_http_fc_export_expired(ngx_fc_redis_cmd_t *cmd)
{
    ngx_http_fc_export_t  *e = cmd->data;

    if (cmd->rc != NGX_OK || cmd->reply == NULL
        || cmd->reply->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_WARN, e->request->connection->log, 0,
                      "export rate counter for api key %L got no expiry",
                      e->key_id);
    }

    ngx_http_fc_export_admit(e, 1);
}


static void
ngx_http_fc_export_admit(ngx_http_fc_export_t *e, long long count)
{
    u_char               buf[NGX_TIME_T_LEN];
    time_t               retry;
    ngx_http_request_t  *r;

    r = e->request;

    if (count <= e->rate_limit) {
        ngx_http_fc_export_plan(e);
        return;
    }

    retry = NGX_HTTP_FC_EXPORT_WINDOW
            - ngx_time() % NGX_HTTP_FC_EXPORT_WINDOW;

    if (ngx_http_fc_export_add_header(r, "Retry-After", buf,
                                      ngx_sprintf(buf, "%T", retry) - buf)
        != NGX_OK)
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    ngx_http_fc_finalize_errorf(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                "too_many_requests",
                                "this API key may make %L requests a "
                                "minute; retry in %T s", e->rate_limit,
                                retry);
}


/* step 3: where the page ends and where the next one starts */
static void
ngx_http_fc_export_plan(ngx_http_fc_export_t *e)
{
    ngx_fc_pg_query_t  *q;

    q = e->query;

    e->params[0] = e->scope;
    e->params[1] = e->after_xid;
    e->params[2] = e->after_id;
    e->params[3] = e->size;

    q->sql = "SELECT rows, last_xid, last_id, has_more, next_cursor"
             " FROM fc_export_plan($1::jsonb, $2::xid8, $3::bigint,"
             " $4::int)";
    q->nparams = 4;
    q->handler = ngx_http_fc_export_planned;

    if (ngx_fc_pg_send(q) != NGX_OK) {
        ngx_http_fc_finalize_error(e->request,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


static void
ngx_http_fc_export_planned(ngx_fc_pg_query_t *q)
{
    int64_t                rows;
    PGresult              *res;
    ngx_int_t              rc;
    ngx_http_request_t    *r;
    ngx_http_fc_export_t  *e;

    e = q->data;
    r = e->request;

    if (q->rc != NGX_OK) {
        ngx_http_fc_export_pg_error(e, q, "the plan");
        return;
    }

    res = q->result;

    if (PQntuples(res) != 1 || PQnfields(res) != 5
        || ngx_http_fc_export_int(res, 0, 0, &rows) != NGX_OK
        || rows < 0
        || ngx_http_fc_export_copy_pos(e->last_xid, res, 0, 1) != NGX_OK
        || ngx_http_fc_export_copy_pos(e->last_id, res, 0, 2) != NGX_OK
        || PQgetisnull(res, 0, 4))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fc_export_plan returned a bad row for api key %L",
                      e->key_id);
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error",
                                   "the server could not complete the "
                                   "request");
        return;
    }

    e->rows = (ngx_uint_t) rows;
    e->has_more = (PQgetvalue(res, 0, 3)[0] == 't');

    e->cursor.len = PQgetlength(res, 0, 4);
    e->cursor.data = ngx_pnalloc(r->pool, e->cursor.len);
    if (e->cursor.data == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    ngx_memcpy(e->cursor.data, PQgetvalue(res, 0, 4), e->cursor.len);

    ngx_fc_pg_free_result(q);

    rc = ngx_http_fc_export_send_header(e);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (e->rows > 0) {
        ngx_http_fc_export_next(e);
        return;
    }

    if (ngx_http_fc_export_epilogue(e) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_fc_export_flush(e, 1));
}


/*
 * Sends the status line and headers, and puts what comes before the
 * first row into the buffer: the opening of the JSON object, or the CSV
 * header row.
 */
static ngx_int_t
ngx_http_fc_export_send_header(ngx_http_fc_export_t *e)
{
    u_char              *p;
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_http_request_t  *r;

    r = e->request;

    r->headers_out.status = NGX_HTTP_OK;

    switch (e->format) {

    case NGX_HTTP_FC_EXPORT_CSV:
        ngx_str_set(&r->headers_out.content_type, "text/csv; charset=utf-8");
        break;

    case NGX_HTTP_FC_EXPORT_CSV1251:
        ngx_str_set(&r->headers_out.content_type,
                    "text/csv; charset=windows-1251");
        break;

    default: /* NGX_HTTP_FC_EXPORT_JSON */
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    /* the length is unknown until the end: chunked transfer encoding */
    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);

    if (ngx_http_fc_export_add_header(r, "X-Next-Cursor", e->cursor.data,
                                      e->cursor.len)
           != NGX_OK
        || ngx_http_fc_export_add_header(r, "X-Has-More",
                                         (u_char *) (e->has_more ? "true"
                                                                 : "false"),
                                         e->has_more ? 4 : 5)
           != NGX_OK
        || ngx_http_fc_export_add_header(r, "Cache-Control",
                                         (u_char *) "no-store", 8)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (e->format != NGX_HTTP_FC_EXPORT_JSON
        && ngx_http_fc_export_add_header(r, "Content-Disposition",
               (u_char *) "attachment; filename=\"transactions.csv\"",
               sizeof("attachment; filename=\"transactions.csv\"") - 1)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* an error page must not replace what follows */
    r->err_status = 0;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (ngx_http_fc_export_reserve(e, NGX_HTTP_FC_EXPORT_ROW_EXTRA)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = e->out + e->out_len;

    if (e->format == NGX_HTTP_FC_EXPORT_JSON) {
        p = ngx_cpymem(p, "{\"items\":[", sizeof("{\"items\":[") - 1);

    } else {
        for (i = 0; ngx_http_fc_export_csv_fields[i]; i++) {
            if (i > 0) {
                *p++ = (e->format == NGX_HTTP_FC_EXPORT_CSV) ? ',' : ';';
            }

            p = ngx_cpymem(p, ngx_http_fc_export_csv_fields[i],
                           ngx_strlen(ngx_http_fc_export_csv_fields[i]));
        }

        *p++ = CR;
        *p++ = LF;
    }

    e->out_len = p - e->out;

    return NGX_OK;
}


/* step 4: asks for the next chunk of the page */
static void
ngx_http_fc_export_next(ngx_http_fc_export_t *e)
{
    ngx_uint_t          n;
    ngx_fc_pg_query_t  *q;

    q = e->query;

    n = ngx_min(e->rows - e->sent, NGX_HTTP_FC_EXPORT_CHUNK);
    ngx_sprintf((u_char *) e->chunk, "%ui%Z", n);

    e->params[0] = e->scope;
    e->params[1] = e->after_xid;
    e->params[2] = e->after_id;
    e->params[3] = e->last_xid;
    e->params[4] = e->last_id;
    e->params[5] = e->chunk;

    q->sql = "SELECT * FROM fc_export_rows($1::jsonb, $2::xid8, $3::bigint,"
             " $4::xid8, $5::bigint, $6::int)";
    q->nparams = 6;
    q->handler = ngx_http_fc_export_chunk;

    if (ngx_fc_pg_send(q) != NGX_OK) {
        ngx_http_finalize_request(e->request, NGX_ERROR);
    }
}


static void
ngx_http_fc_export_chunk(ngx_fc_pg_query_t *q)
{
    int                    i, n;
    char                  *state, *msg;
    ngx_int_t              rc;
    ngx_http_request_t    *r;
    ngx_http_fc_export_t  *e;

    e = q->data;
    r = e->request;

    if (q->rc != NGX_OK) {
        state = NULL;
        msg = NULL;

        if (q->result) {
            state = PQresultErrorField(q->result, PG_DIAG_SQLSTATE);
            msg = PQresultErrorField(q->result, PG_DIAG_MESSAGE_PRIMARY);
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "export for api key %L stopped after %ui of %ui rows:"
                      " %s %s", e->key_id, e->sent, e->rows,
                      state ? state : "no answer", msg ? msg : "");
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    n = PQntuples(q->result);

    /*
     * The plan counted these rows below the horizon, where nothing
     * changes; fewer means they were deleted, and a page cut short
     * must not hand out a cursor that skips them.
     */

    if (n == 0 || PQnfields(q->result) != NGX_HTTP_FC_COL_N
        || (ngx_uint_t) n > e->rows - e->sent)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "export for api key %L stopped after %ui of %ui rows:"
                      " fc_export_rows returned %d rows", e->key_id,
                      e->sent, e->rows, n);
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_fc_export_row(e, q->result, i) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
    }

    if (ngx_http_fc_export_copy_pos(e->after_xid, q->result, n - 1,
                                    NGX_HTTP_FC_COL_XID)
           != NGX_OK
        || ngx_http_fc_export_copy_pos(e->after_id, q->result, n - 1,
                                       NGX_HTTP_FC_COL_ID)
           != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_fc_pg_free_result(q);

    e->sent += n;

    if (e->sent == e->rows) {
        if (ngx_http_fc_export_epilogue(e) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        /* nginx's writer sends whatever is left, then ends the request */
        ngx_http_finalize_request(r, ngx_http_fc_export_flush(e, 1));
        return;
    }

    rc = ngx_http_fc_export_flush(e, 0);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (ngx_http_fc_export_pending(r)) {
        if (ngx_http_fc_export_wait(r) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    ngx_http_fc_export_next(e);
}


/*
 * Appends one row in the page's format.  Money and volume are printed
 * from the integers; the VAT is the one contained in the amount at the
 * rate in force on the transaction's local date, rounded half away from
 * zero, so that a refund's VAT is exactly the negated VAT of its sale.
 */
static ngx_int_t
ngx_http_fc_export_row(ngx_http_fc_export_t *e, PGresult *res, int row)
{
    int                   col;
    char                  volume[FC_VOLUME_STR_LEN];
    char                  price[FC_MONEY_STR_LEN];
    char                  amount[FC_MONEY_STR_LEN];
    char                  vat[FC_MONEY_STR_LEN];
    char                 *at;
    u_char               *p, sep;
    size_t                need;
    int64_t               volume_ml, unit_price, total, vat_kop, day;
    ngx_http_request_t   *r;
    const fc_vat_rate_t  *rate;

    r = e->request;

    at = PQgetvalue(res, row, NGX_HTTP_FC_COL_AT);

    if (ngx_http_fc_export_int(res, row, NGX_HTTP_FC_COL_VOLUME, &volume_ml)
           != NGX_OK
        || ngx_http_fc_export_int(res, row, NGX_HTTP_FC_COL_PRICE,
                                  &unit_price)
           != NGX_OK
        || ngx_http_fc_export_int(res, row, NGX_HTTP_FC_COL_AMOUNT, &total)
           != NGX_OK
        || PQgetlength(res, row, NGX_HTTP_FC_COL_AT) < FC_DATE_STR_LEN - 1
        || fc_date_parse(at, FC_DATE_STR_LEN - 1, &day) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "export for api key %L: a bad row for transaction %s",
                      e->key_id, PQgetvalue(res, row, NGX_HTTP_FC_COL_ID));
        return NGX_ERROR;
    }

    rate = fc_vat_find(&e->vat, day);

    if (rate == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "export for api key %L: no vat rate is in force on "
                      "%*s (transaction %s)", e->key_id,
                      (size_t) (FC_DATE_STR_LEN - 1), at,
                      PQgetvalue(res, row, NGX_HTTP_FC_COL_ID));
        return NGX_ERROR;
    }

    if (fc_vat_amount(rate, total, &vat_kop) != 0
        || fc_volume_format(volume_ml, volume, sizeof(volume)) < 0
        || fc_money_format(unit_price, price, sizeof(price)) < 0
        || fc_money_format(total, amount, sizeof(amount)) < 0
        || fc_money_format(vat_kop, vat, sizeof(vat)) < 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "export for api key %L: transaction %s is out of "
                      "range", e->key_id,
                      PQgetvalue(res, row, NGX_HTTP_FC_COL_ID));
        return NGX_ERROR;
    }

    need = NGX_HTTP_FC_EXPORT_ROW_EXTRA;

    for (col = 0; col < NGX_HTTP_FC_COL_N; col++) {
        need += NGX_HTTP_FC_EXPORT_ESCAPE * PQgetlength(res, row, col);
    }

    if (ngx_http_fc_export_reserve(e, need) != NGX_OK) {
        return NGX_ERROR;
    }

    p = e->out + e->out_len;

    if (e->format == NGX_HTTP_FC_EXPORT_JSON) {

        if (e->sent > 0 || row > 0) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "\n{\"id\":%s,\"at\":",
                        PQgetvalue(res, row, NGX_HTTP_FC_COL_ID));
        p = ngx_http_fc_export_json_str(p, res, row, NGX_HTTP_FC_COL_AT);
        p = ngx_cpymem(p, ",\"operation\":", sizeof(",\"operation\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_OPERATION);
        p = ngx_sprintf(p, ",\"contract_id\":%s,\"contract\":",
                        PQgetvalue(res, row, NGX_HTTP_FC_COL_CONTRACT_ID));
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_CONTRACT);
        p = ngx_sprintf(p, ",\"card_id\":%s,\"card\":",
                        PQgetvalue(res, row, NGX_HTTP_FC_COL_CARD_ID));
        p = ngx_http_fc_export_json_str(p, res, row, NGX_HTTP_FC_COL_CARD);
        p = ngx_cpymem(p, ",\"driver\":", sizeof(",\"driver\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row, NGX_HTTP_FC_COL_DRIVER);
        p = ngx_cpymem(p, ",\"vehicle_plate\":",
                       sizeof(",\"vehicle_plate\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row, NGX_HTTP_FC_COL_PLATE);
        p = ngx_sprintf(p, ",\"station_id\":%s,\"station\":",
                        PQgetvalue(res, row, NGX_HTTP_FC_COL_STATION_ID));
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_STATION);
        p = ngx_cpymem(p, ",\"station_address\":",
                       sizeof(",\"station_address\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_ADDRESS);
        p = ngx_cpymem(p, ",\"product_code\":",
                       sizeof(",\"product_code\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_PRODUCT_CODE);
        p = ngx_cpymem(p, ",\"product\":", sizeof(",\"product\":") - 1);
        p = ngx_http_fc_export_json_str(p, res, row,
                                        NGX_HTTP_FC_COL_PRODUCT);
        p = ngx_sprintf(p, ",\"volume\":\"%s\",\"price\":\"%s\","
                        "\"amount\":\"%s\",\"discount\":\"0.00\","
                        "\"vat_rate\":%d,\"vat\":\"%s\"}",
                        volume, price, amount, rate->rate, vat);

        e->out_len = p - e->out;

        return NGX_OK;
    }

    /* CSV: ngx_http_fc_export_csv_fields, the ids left out */

    sep = (e->format == NGX_HTTP_FC_EXPORT_CSV) ? ',' : ';';

    for (col = NGX_HTTP_FC_COL_ID; col <= NGX_HTTP_FC_COL_PRODUCT; col++) {

        if (col == NGX_HTTP_FC_COL_CONTRACT_ID
            || col == NGX_HTTP_FC_COL_CARD_ID
            || col == NGX_HTTP_FC_COL_STATION_ID)
        {
            continue;
        }

        if (col > NGX_HTTP_FC_COL_ID) {
            *p++ = sep;
        }

        p = ngx_http_fc_export_csv_str(p,
                                       (u_char *) PQgetvalue(res, row, col),
                                       PQgetlength(res, row, col), sep);
    }

    p = ngx_sprintf(p, "%c%s%c%s%c%s%c0.00%c%d%%%c%s" CRLF,
                    sep, volume, sep, price, sep, amount, sep, sep,
                    rate->rate, sep, vat);

    e->out_len = p - e->out;

    return NGX_OK;
}


/* what follows the last row: the cursor in JSON, nothing in CSV */
static ngx_int_t
ngx_http_fc_export_epilogue(ngx_http_fc_export_t *e)
{
    u_char  *p;

    if (e->format != NGX_HTTP_FC_EXPORT_JSON) {
        return NGX_OK;
    }

    if (ngx_http_fc_export_reserve(e, e->cursor.len
                                      + NGX_HTTP_FC_EXPORT_ROW_EXTRA)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(e->out + e->out_len,
                    "\n],\"next_cursor\":\"%V\",\"has_more\":%s}\n",
                    &e->cursor, e->has_more ? "true" : "false");

    e->out_len = p - e->out;

    return NGX_OK;
}


/*
 * Passes the buffer to the output filters, converted to cp1251 for
 * csv1251 (in place: cp1251 is never longer than UTF-8).  Every chunk
 * is flushed, so that nothing waits in the write filter for more
 * (postpone_output) and the buffer is free again once the client has
 * drained the socket.
 */
static ngx_int_t
ngx_http_fc_export_flush(ngx_http_fc_export_t *e, ngx_uint_t last)
{
    size_t               n, replaced;
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = e->request;

    if (e->format == NGX_HTTP_FC_EXPORT_CSV1251 && e->out_len > 0) {

        if (fc_cp1251_encode(e->out, e->out_len, e->out, e->out_len, &n,
                             &replaced)
            != 0)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "export for api key %L: the database sent text "
                          "that is not UTF-8", e->key_id);
            return NGX_ERROR;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "export: %uz characters without a cp1251 byte",
                       replaced);

        e->out_len = n;
    }

    cl = ngx_chain_get_free_buf(r->pool, &e->free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->tag = (ngx_buf_tag_t) &ngx_http_fc_export_tag;
    b->start = e->out;
    b->pos = e->out;
    b->last = e->out + e->out_len;
    b->end = b->last;
    b->memory = (e->out_len > 0);
    b->flush = 1;

    if (last) {
        b->last_buf = (r == r->main);
        b->last_in_chain = 1;
    }

    e->out_len = 0;

    rc = ngx_http_output_filter(r, cl);

    ngx_chain_update_chains(r->pool, &e->free, &e->busy, &cl, b->tag);

    return rc;
}


static ngx_uint_t
ngx_http_fc_export_pending(ngx_http_request_t *r)
{
    return r->out != NULL || r->buffered || r->postponed
           || r->connection->buffered;
}


/* waits for the client to drain what was sent, at most send_timeout */
static ngx_int_t
ngx_http_fc_export_wait(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r->main, ngx_http_core_module);

    r->write_event_handler = ngx_http_fc_export_write;

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    return ngx_handle_write_event(wev, clcf->send_lowat);
}


/* the write event of a client that is draining a chunk */
static void
ngx_http_fc_export_write(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_event_t           *wev;
    ngx_connection_t      *c;
    ngx_http_fc_ctx_t     *ctx;

    c = r->connection;
    wev = c->write;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "export client timed out");
        c->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (!wev->delayed) {
        rc = ngx_http_output_filter(r, NULL);

        if (rc == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
    }

    if (wev->delayed || ngx_http_fc_export_pending(r)) {
        if (ngx_http_fc_export_wait(r) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ctx = ngx_http_fc_get_ctx(r);

    ngx_http_fc_export_next(ctx->data);
}


/*
 * Answers a failed query before the header was sent: an error raised on
 * purpose by the SQL API (SQLSTATE FCnnn, the code in HINT) as it asks,
 * no answer as 503, anything else as 500 with the SQLSTATE in the log.
 */
static void
ngx_http_fc_export_pg_error(ngx_http_fc_export_t *e, ngx_fc_pg_query_t *q,
    const char *what)
{
    char                *state, *hint, *msg;
    ngx_int_t            status;
    ngx_http_request_t  *r;

    r = e->request;

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
            ngx_http_fc_finalize_error(r, status, hint ? hint : "error",
                                       msg ? msg : "error");
            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "export: %s failed: sql error %s: %s", what,
                  state ? state : "-", msg ? msg : "-");

    ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "internal_error",
                               "the server could not complete the request");
}


/*
 * Makes room for len more bytes in the buffer.  Only called while no
 * part of the buffer is still on its way to the client, so that moving
 * it is safe.
 */
static ngx_int_t
ngx_http_fc_export_reserve(ngx_http_fc_export_t *e, size_t len)
{
    u_char  *p;
    size_t   size;

    if (e->out_size - e->out_len >= len) {
        return NGX_OK;
    }

    size = ngx_max(e->out_size * 2, NGX_HTTP_FC_EXPORT_BUF_MIN);
    size = ngx_max(size, e->out_len + len);

    p = ngx_alloc(size, e->request->connection->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (e->out) {
        ngx_memcpy(p, e->out, e->out_len);
        ngx_free(e->out);
    }

    e->out = p;
    e->out_size = size;

    return NGX_OK;
}


/* a column as a JSON string, or null; the text is valid UTF-8 */
static u_char *
ngx_http_fc_export_json_str(u_char *p, PGresult *res, int row, int col)
{
    u_char         *s, *last;
    static u_char   hex[] = "0123456789abcdef";

    if (PQgetisnull(res, row, col)) {
        return ngx_cpymem(p, "null", 4);
    }

    s = (u_char *) PQgetvalue(res, row, col);
    last = s + PQgetlength(res, row, col);

    *p++ = '"';

    for ( /* void */ ; s < last; s++) {

        if (*s == '"' || *s == '\\') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s < 0x20) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];

        } else {
            *p++ = *s;
        }
    }

    *p++ = '"';

    return p;
}


/*
 * A field as RFC 4180 has it: quoted when it holds the separator, a
 * quote, CR or LF, with quotes doubled; an SQL NULL is an empty field.
 */
static u_char *
ngx_http_fc_export_csv_str(u_char *p, u_char *s, size_t len, u_char sep)
{
    size_t   i;

    for (i = 0; i < len; i++) {
        if (s[i] == sep || s[i] == '"' || s[i] == CR || s[i] == LF) {
            break;
        }
    }

    if (i == len) {
        return ngx_cpymem(p, s, len);
    }

    *p++ = '"';

    for (i = 0; i < len; i++) {
        if (s[i] == '"') {
            *p++ = '"';
        }

        *p++ = s[i];
    }

    *p++ = '"';

    return p;
}


/* a column of decimal digits, maybe negative, as int64; checked */
static ngx_int_t
ngx_http_fc_export_int(PGresult *res, int row, int col, int64_t *out)
{
    char        *s;
    size_t       i, len;
    int64_t      v;
    ngx_uint_t   neg;

    if (PQgetisnull(res, row, col)) {
        return NGX_ERROR;
    }

    s = PQgetvalue(res, row, col);
    len = PQgetlength(res, row, col);

    neg = (len > 0 && s[0] == '-');
    i = neg;

    if (i == len) {
        return NGX_ERROR;
    }

    v = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9'
            || fc_mul_i64(v, 10, &v) != 0
            || (neg ? fc_sub_i64(v, s[i] - '0', &v)
                    : fc_add_i64(v, s[i] - '0', &v)) != 0)
        {
            return NGX_ERROR;
        }
    }

    *out = v;

    return NGX_OK;
}


/* copies a position (an xid8 or an id: digits only) into dst */
static ngx_int_t
ngx_http_fc_export_copy_pos(char *dst, PGresult *res, int row, int col)
{
    char    *s;
    size_t   i, len;

    if (PQgetisnull(res, row, col)) {
        return NGX_ERROR;
    }

    s = PQgetvalue(res, row, col);
    len = PQgetlength(res, row, col);

    if (len == 0 || len >= NGX_HTTP_FC_EXPORT_POS_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(dst, s, len + 1);

    return NGX_OK;
}


static ngx_int_t
ngx_http_fc_export_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, len);
    if (h->value.data == NULL) {
        h->hash = 0;
        return NGX_ERROR;
    }

    ngx_memcpy(h->value.data, value, len);

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.len = len;

    return NGX_OK;
}


static void
ngx_http_fc_export_cleanup(void *data)
{
    ngx_http_fc_export_t  *e = data;

    if (e->out) {
        ngx_free(e->out);
        e->out = NULL;
    }

    json_decref(e->answer);
    e->answer = NULL;
}

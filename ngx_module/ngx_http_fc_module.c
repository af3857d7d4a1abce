
/*
 * ngx_http_fc_module: the HTTP face of the fuel card platform.
 *
 * It owns the "fc_api" content handler (a route table matched on method
 * and path, with the request body read and parsed as JSON before a
 * route's handler runs), the one JSON error shape of every API location,
 * the Prometheus metrics kept in a shared memory zone, the secrets read
 * from files, and the thread pool used for CPU-heavy work.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_thread_pool.h>

#include "ngx_http_fc_module.h"
#include "ngx_http_fc_api.h"
#include "ngx_fc_pg.h"
#include "ngx_fc_redis.h"


#define NGX_HTTP_FC_STATUS_N     24
#define NGX_HTTP_FC_BUCKETS_N    12
#define NGX_HTTP_FC_WORKERS_MAX  64
#define NGX_HTTP_FC_ROUTES_MAX   128
#define NGX_HTTP_FC_HOLD_TTL     3600      /* s, card schemes expect an hour */
#define NGX_HTTP_FC_JSON_DEPTH   16        /* levels of a request body */


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  value;
} ngx_http_fc_secret_t;


/* all counters live in shared memory and are updated atomically */
typedef struct {
    ngx_atomic_t               requests[NGX_HTTP_FC_ROUTES_MAX + 1]
                                       [NGX_HTTP_FC_STATUS_N];
    ngx_atomic_t               backend_errors[NGX_FC_BACKEND_N]
                                             [NGX_FC_ERR_N];
    ngx_atomic_t               latency_buckets[NGX_FC_BACKEND_N]
                                              [NGX_HTTP_FC_BUCKETS_N];
    ngx_atomic_t               latency_count[NGX_FC_BACKEND_N];
    ngx_atomic_t               latency_sum_ms[NGX_FC_BACKEND_N];
    ngx_atomic_t               pool[NGX_HTTP_FC_WORKERS_MAX]
                                   [NGX_FC_BACKEND_N][3];
} ngx_http_fc_metrics_t;


typedef struct {
    ngx_shm_zone_t            *metrics_zone;
    ngx_thread_pool_t         *thread_pool;
    ngx_str_t                  thread_pool_name;
    ngx_array_t               *secrets;    /* ngx_http_fc_secret_t */
    ngx_flag_t                 test_routes;
    time_t                     hold_ttl;
} ngx_http_fc_main_conf_t;


typedef struct {
    ngx_str_t                  group;
} ngx_http_fc_loc_conf_t;


typedef struct {
    ngx_http_request_t        *request;
    ngx_http_fc_thread_pt      work;
    ngx_http_fc_thread_pt      done;
    void                      *data;
} ngx_http_fc_thread_ctx_t;


typedef struct {
    ngx_http_fc_ctx_t         *ctx;
    ngx_uint_t                 pg_ok;
    ngx_uint_t                 redis_ok;
} ngx_http_fc_ready_t;


static ngx_int_t ngx_http_fc_handler(ngx_http_request_t *r);
static ngx_http_fc_route_t *ngx_http_fc_match(ngx_http_request_t *r,
    ngx_str_t *group, ngx_http_fc_ctx_t *ctx, ngx_uint_t *allowed);
static void ngx_http_fc_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_fc_parse_body(ngx_http_fc_ctx_t *ctx);
static ngx_int_t ngx_http_fc_raw_body(ngx_http_fc_ctx_t *ctx);
static ngx_int_t ngx_http_fc_body_bytes(ngx_http_fc_ctx_t *ctx);
static ngx_uint_t ngx_http_fc_json_depth(json_t *json, ngx_uint_t level);
static void ngx_http_fc_ctx_cleanup(void *data);
static ngx_int_t ngx_http_fc_error_page(ngx_http_request_t *r);
static const char *ngx_http_fc_status_code(ngx_uint_t status);
static ngx_int_t ngx_http_fc_log_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_fc_status_slot(ngx_uint_t status);

static void ngx_http_fc_health(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_ready(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_ready_pg_done(ngx_fc_pg_query_t *q);
static void ngx_http_fc_ready_redis_done(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_ready_finish(ngx_http_fc_ready_t *rd);
static void ngx_http_fc_metrics(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_metrics_platform(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_metrics_pg_done(ngx_fc_pg_query_t *q);
static void ngx_http_fc_metrics_render(ngx_http_fc_ctx_t *ctx,
    ngx_str_t *extra);
static void ngx_http_fc_topup_success(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_test_pg_sleep(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_test_pg_done(ngx_fc_pg_query_t *q);
static void ngx_http_fc_test_redis(ngx_http_fc_ctx_t *ctx);
static void ngx_http_fc_test_redis_done(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_test_echo(ngx_http_fc_ctx_t *ctx);

static void ngx_http_fc_thread_handler(void *data, ngx_log_t *log);
static void ngx_http_fc_thread_event_handler(ngx_event_t *ev);
static void ngx_http_fc_thread_resume(ngx_http_request_t *r);

static ngx_int_t ngx_http_fc_init_metrics_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static char *ngx_http_fc_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_fc_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_fc_secret_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void *ngx_http_fc_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_fc_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_fc_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_fc_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_fc_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_fc_postconfiguration(ngx_conf_t *cf);


static ngx_command_t  ngx_http_fc_commands[] = {

    { ngx_string("fc_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_fc_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_fc_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_main_conf_t, thread_pool_name),
      NULL },

    { ngx_string("fc_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_fc_secret_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_hold_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_main_conf_t, hold_ttl),
      NULL },

    { ngx_string("fc_test_routes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_main_conf_t, test_routes),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_fc_module_ctx = {
    ngx_http_fc_preconfiguration,          /* preconfiguration */
    ngx_http_fc_postconfiguration,         /* postconfiguration */

    ngx_http_fc_create_main_conf,          /* create main configuration */
    ngx_http_fc_init_main_conf,            /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_fc_create_loc_conf,           /* create location configuration */
    ngx_http_fc_merge_loc_conf             /* merge location configuration */
};


ngx_module_t  ngx_http_fc_module = {
    NGX_MODULE_V1,
    &ngx_http_fc_module_ctx,               /* module context */
    ngx_http_fc_commands,                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


#define ngx_http_fc_route(group, method, pattern, handler, name, flags)      \
    { ngx_string(group), method, ngx_string(pattern), handler,              \
      ngx_string(name), flags }

/*
 * Every API route.  The first route of a group whose method and pattern
 * match wins; a path that matches with another method gives 405.
 */
static ngx_http_fc_route_t  ngx_http_fc_routes[] = {

    ngx_http_fc_route("health", NGX_HTTP_GET|NGX_HTTP_HEAD, "/health",
                      ngx_http_fc_health, "health", 0),
    ngx_http_fc_route("ready", NGX_HTTP_GET|NGX_HTTP_HEAD, "/ready",
                      ngx_http_fc_ready, "ready", 0),
    ngx_http_fc_route("metrics", NGX_HTTP_GET, "/metrics",
                      ngx_http_fc_metrics, "metrics", 0),
    ngx_http_fc_route("metrics", NGX_HTTP_GET, "/metrics/platform",
                      ngx_http_fc_metrics_platform, "metrics_platform", 0),

    ngx_http_fc_route("topup", NGX_HTTP_GET|NGX_HTTP_HEAD, "/topup/success",
                      ngx_http_fc_topup_success, "topup_success", 0),

    ngx_http_fc_route("test", NGX_HTTP_GET, "/_test/pg_sleep",
                      ngx_http_fc_test_pg_sleep, "test_pg_sleep",
                      NGX_HTTP_FC_TEST_ONLY),
    ngx_http_fc_route("test", NGX_HTTP_GET, "/_test/redis",
                      ngx_http_fc_test_redis, "test_redis",
                      NGX_HTTP_FC_TEST_ONLY),
    ngx_http_fc_route("test", NGX_HTTP_POST, "/_test/echo",
                      ngx_http_fc_test_echo, "test_echo",
                      NGX_HTTP_FC_TEST_ONLY|NGX_HTTP_FC_JSON_BODY),

    NGX_HTTP_FC_API_ROUTES

    { ngx_null_string, 0, ngx_null_string, NULL, ngx_null_string, 0 }
};


/* status codes counted one by one; everything else goes to "other" */
static ngx_uint_t  ngx_http_fc_statuses[NGX_HTTP_FC_STATUS_N - 1] = {
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409,
    413, 415, 422, 429, 499, 500, 502, 503, 504, 408
};


/* upper bounds of the latency histogram, milliseconds */
static ngx_msec_t  ngx_http_fc_buckets[NGX_HTTP_FC_BUCKETS_N] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000
};


static ngx_http_fc_metrics_t  *ngx_http_fc_shm;
static ngx_http_fc_main_conf_t  *ngx_http_fc_mcf;


static ngx_int_t
ngx_http_fc_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_uint_t               allowed;
    ngx_pool_cleanup_t      *cln;
    ngx_http_fc_ctx_t       *ctx;
    ngx_http_fc_route_t     *route;
    ngx_http_fc_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_fc_module);

    if (flcf->group.len == 5
        && ngx_strncmp(flcf->group.data, "error", 5) == 0)
    {
        return ngx_http_fc_error_page(r);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_fc_ctx_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->route_index = NGX_HTTP_FC_ROUTES_MAX;
    ngx_http_set_ctx(r, ctx, ngx_http_fc_module);

    route = ngx_http_fc_match(r, &flcf->group, ctx, &allowed);

    if (route == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        /* the answer finalizes the request; NGX_DONE then ends the
           content phase without touching it again */
        r->main->count++;

        if (allowed) {
            ngx_http_fc_finalize_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed",
                                       "this method is not allowed here");
            return NGX_DONE;
        }

        ngx_http_fc_finalize_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such resource");
        return NGX_DONE;
    }

    ctx->route = route;
    ctx->route_index = route - ngx_http_fc_routes;

    rc = ngx_http_read_client_request_body(r, ngx_http_fc_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * Finds the route for the method and path among the routes of a group,
 * filling in the path parameters.  When the path matches but the method
 * does not, *allowed is set so that the caller answers 405.
 */
static ngx_http_fc_route_t *
ngx_http_fc_match(ngx_http_request_t *r, ngx_str_t *group,
    ngx_http_fc_ctx_t *ctx, ngx_uint_t *allowed)
{
    u_char               *p, *last, *pp, *plast, *seg;
    ngx_uint_t            n, test_routes;
    ngx_http_fc_route_t  *route;

    *allowed = 0;
    test_routes = ngx_http_fc_mcf ? ngx_http_fc_mcf->test_routes : 0;

    for (route = ngx_http_fc_routes; route->handler; route++) {

        if (route->group.len != group->len
            || ngx_strncmp(route->group.data, group->data, group->len) != 0)
        {
            continue;
        }

        if ((route->flags & NGX_HTTP_FC_TEST_ONLY) && test_routes != 1) {
            continue;
        }

        p = r->uri.data;
        last = p + r->uri.len;
        pp = route->pattern.data;
        plast = pp + route->pattern.len;
        n = 0;

        while (p < last && pp < plast) {

            if (pp + 1 < plast && pp[0] == '{' && pp[1] == '}') {
                seg = p;
                while (p < last && *p != '/') {
                    p++;
                }

                if (p == seg || n == NGX_HTTP_FC_MAX_PARAMS) {
                    break;
                }

                ctx->params[n].data = seg;
                ctx->params[n].len = p - seg;
                n++;
                pp += 2;
                continue;
            }

            if (*p != *pp) {
                break;
            }

            p++;
            pp++;
        }

        if (p != last || pp != plast) {
            continue;
        }

        if (!(route->method & r->method)) {
            *allowed = 1;
            continue;
        }

        ctx->nparams = n;
        return route;
    }

    return NULL;
}


static void
ngx_http_fc_body_handler(ngx_http_request_t *r)
{
    ngx_http_fc_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_fc_module);

    if (ngx_http_fc_parse_body(ctx) != NGX_OK) {
        return;
    }

    /*
     * While a route waits on a backend, a client that goes away must end
     * the request, so that its pool cleanups detach the pending calls.
     */
    r->read_event_handler = ngx_http_test_reading;

    ctx->route->handler(ctx);
}


/*
 * Parses the request body as JSON when the route wants one.  On a bad
 * body it answers 400, 413 or 415 and returns NGX_ERROR.
 */
static ngx_int_t
ngx_http_fc_parse_body(ngx_http_fc_ctx_t *ctx)
{
    ngx_str_t            type;
    json_error_t         err;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ctx->route->flags & NGX_HTTP_FC_RAW_BODY) {
        return ngx_http_fc_raw_body(ctx);
    }

    if (!(ctx->route->flags
          & (NGX_HTTP_FC_JSON_BODY|NGX_HTTP_FC_JSON_OPTIONAL)))
    {
        return NGX_OK;
    }

    if ((ctx->route->flags & NGX_HTTP_FC_JSON_OPTIONAL)
        && (r->request_body == NULL || r->request_body->bufs == NULL
            || r->headers_in.content_length_n == 0))
    {
        return NGX_OK;
    }

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                   "a JSON object body is required");
        return NGX_ERROR;
    }

    type.len = 0;
    if (r->headers_in.content_type) {
        type = r->headers_in.content_type->value;
    }

    if (type.len < 16
        || ngx_strncasecmp(type.data, (u_char *) "application/json", 16)
           != 0
        || (type.len > 16 && type.data[16] != ';' && type.data[16] != ' '))
    {
        ngx_http_fc_finalize_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                   "unsupported_media_type",
                                   "the body must be application/json");
        return NGX_ERROR;
    }

    if (ngx_http_fc_body_bytes(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->body = json_loadb((char *) ctx->raw.data, ctx->raw.len,
                           JSON_REJECT_DUPLICATES, &err);

    if (ctx->body == NULL) {
        ngx_http_fc_finalize_errorf(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                    "malformed JSON at line %d, column %d "
                                    "(byte %d): %s", err.line, err.column,
                                    err.position, err.text);
        return NGX_ERROR;
    }

    if (!json_is_object(ctx->body)) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                   "the body must be a JSON object");
        return NGX_ERROR;
    }

    if (ngx_http_fc_json_depth(ctx->body, 0) > NGX_HTTP_FC_JSON_DEPTH) {
        ngx_http_fc_finalize_errorf(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                    "the JSON is nested more than %d "
                                    "levels deep", NGX_HTTP_FC_JSON_DEPTH);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Keeps the body's bytes for a route that takes a file (a bank
 * registry, say).  The location must keep the body in memory
 * (client_body_buffer_size as large as client_max_body_size): reading a
 * spooled file would block the worker.
 */
static ngx_int_t
ngx_http_fc_raw_body(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                   "a request body is required");
        return NGX_ERROR;
    }

    return ngx_http_fc_body_bytes(ctx);
}


/*
 * Gathers the body's buffers into ctx->raw, one contiguous string.  A
 * body spooled to a file is refused with 413 rather than read, which
 * would block the worker on the disk.
 */
static ngx_int_t
ngx_http_fc_body_bytes(ngx_http_fc_ctx_t *ctx)
{
    u_char              *p;
    size_t               len;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (r->request_body->temp_file) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "payload_too_large",
                                   "the body is too large");
        return NGX_ERROR;
    }

    len = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return NGX_ERROR;
    }

    ctx->raw.data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    ctx->raw.len = p - ctx->raw.data;
    *p = '\0';

    return NGX_OK;
}


/*
 * How deep a JSON value nests, counting stops once past the limit: no
 * API body needs more than a few levels, and deeper ones only make work
 * for every layer that walks them.
 */
static ngx_uint_t
ngx_http_fc_json_depth(json_t *json, ngx_uint_t level)
{
    size_t       i;
    json_t      *v;
    ngx_uint_t   d, max;
    const char  *key;

    if (level > NGX_HTTP_FC_JSON_DEPTH) {
        return level;
    }

    max = level;

    if (json_is_object(json)) {
        json_object_foreach(json, key, v) {
            d = ngx_http_fc_json_depth(v, level + 1);
            if (d > max) {
                max = d;
            }
        }

    } else if (json_is_array(json)) {
        json_array_foreach(json, i, v) {
            d = ngx_http_fc_json_depth(v, level + 1);
            if (d > max) {
                max = d;
            }
        }
    }

    return max;
}


static void
ngx_http_fc_ctx_cleanup(void *data)
{
    ngx_http_fc_ctx_t  *ctx = data;

    if (ctx->body) {
        json_decref(ctx->body);
        ctx->body = NULL;
    }
}


/*
 * The test clock: with "fc_test_routes on", X-FC-Test-Now: <unix seconds>
 * sets the time a request is decided at, so that tests can cross days
 * and weekdays.  NGX_DECLINED when there is no test clock.
 */
ngx_int_t
ngx_http_fc_test_now(ngx_http_request_t *r, time_t *now)
{
    ngx_str_t  v;
    time_t     t;

    if (ngx_http_fc_mcf == NULL || ngx_http_fc_mcf->test_routes != 1) {
        return NGX_DECLINED;
    }

    v = ngx_http_fc_header(r, "X-FC-Test-Now");
    if (v.len == 0) {
        return NGX_DECLINED;
    }

    t = ngx_atotm(v.data, v.len);
    if (t == NGX_ERROR) {
        return NGX_DECLINED;
    }

    *now = t;

    return NGX_OK;
}


time_t
ngx_http_fc_hold_ttl(ngx_http_request_t *r)
{
    ngx_http_fc_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_http_fc_module);

    return fmcf->hold_ttl;
}


ngx_http_fc_ctx_t *
ngx_http_fc_get_ctx(ngx_http_request_t *r)
{
    return ngx_http_get_module_ctx(r, ngx_http_fc_module);
}


/*
 * The named location that every API error_page points at: nginx's own
 * errors (413 before the body is read, 400 on a broken request line) get
 * the same JSON shape as ours.  r->err_status holds the original status.
 */
static ngx_int_t
ngx_http_fc_error_page(ngx_http_request_t *r)
{
    ngx_uint_t          status;
    ngx_http_fc_ctx_t  *ctx;
    const char         *code;

    status = r->err_status ? r->err_status : NGX_HTTP_INTERNAL_SERVER_ERROR;

    /* as in ngx_http_fc_handler: the answer finalizes, NGX_DONE follows */
    r->main->count++;

    /* nginx's own code for a header too large is answered as a 400 */
    if (status == NGX_HTTP_REQUEST_HEADER_TOO_LARGE) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                   "a request header or cookie is too "
                                   "large");
        return NGX_DONE;
    }

    /* nginx cleared the context on the redirect; metrics count "other" */
    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_ctx_t));
    if (ctx != NULL) {
        ctx->request = r;
        ctx->route_index = NGX_HTTP_FC_ROUTES_MAX;
        ngx_http_set_ctx(r, ctx, ngx_http_fc_module);
    }

    code = ngx_http_fc_status_code(status);

    ngx_http_fc_finalize_error(r, status, code,
                               status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                               ? "the body is too large"
                               : status == NGX_HTTP_TOO_MANY_REQUESTS
                               ? "too many requests, retry later"
                               : status == NGX_HTTP_NOT_FOUND
                               ? "no such resource"
                               : status == NGX_HTTP_REQUEST_URI_TOO_LARGE
                               ? "the request URI is too long"
                               : status >= 500
                               ? "the server could not complete the request"
                               : "the request was not understood");
    return NGX_DONE;
}


static const char *
ngx_http_fc_status_code(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        return "bad_request";
    case NGX_HTTP_UNAUTHORIZED:
        return "unauthorized";
    case NGX_HTTP_FORBIDDEN:
        return "forbidden";
    case NGX_HTTP_NOT_FOUND:
        return "not_found";
    case NGX_HTTP_NOT_ALLOWED:
        return "method_not_allowed";
    case NGX_HTTP_REQUEST_TIME_OUT:
        return "request_timeout";
    case NGX_HTTP_CONFLICT:
        return "conflict";
    case NGX_HTTP_LENGTH_REQUIRED:
        return "length_required";
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return "payload_too_large";
    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        return "uri_too_long";
    case NGX_HTTP_UNSUPPORTED_MEDIA_TYPE:
        return "unsupported_media_type";
    case 422:
        return "validation_failed";
    case NGX_HTTP_TOO_MANY_REQUESTS:
        return "too_many_requests";
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return "service_unavailable";
    case NGX_HTTP_BAD_GATEWAY:
        return "bad_gateway";
    case NGX_HTTP_GATEWAY_TIME_OUT:
        return "gateway_timeout";
    case NGX_HTTP_VERSION_NOT_SUPPORTED:
        return "http_version_not_supported";
    default:
        return status >= 500 ? "internal_error" : "bad_request";
    }
}


void
ngx_http_fc_finalize_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    json_t  *json;

    json = json_pack("{s:{s:s,s:s}}", "error", "code", code,
                     "message", message);

    ngx_http_fc_send_json(r, status, json);
}


void
ngx_http_fc_finalize_errorf(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *fmt, ...)
{
    u_char   *p;
    u_char    buf[512];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf) - 1, fmt, args);
    va_end(args);

    *p = '\0';

    ngx_http_fc_finalize_error(r, status, code, (const char *) buf);
}


void
ngx_http_fc_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json)
{
    char    *s;
    size_t   len;
    u_char  *p;

    if (json == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* 15 digits: a coordinate keeps the decimals SQL rounded it to */
    s = json_dumps(json, JSON_COMPACT|JSON_REAL_PRECISION(15));
    json_decref(json);

    if (s == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = ngx_strlen(s);
    p = ngx_pnalloc(r->pool, len + 1);

    if (p == NULL) {
        free(s);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(p, s, len);
    p[len] = '\n';
    free(s);

    ngx_http_fc_send_body(r, status, "application/json", p, len + 1);
}


void
ngx_http_fc_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r->header_sent) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) content_type;
    r->headers_out.content_type.len = ngx_strlen(content_type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    /* an error body is ours: keep error_page from replacing it */
    r->err_status = 0;
    r->headers_out.status_line.len = 0;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || len == 0) {
        ngx_http_finalize_request(r, rc == NGX_ERROR ? NGX_ERROR : NGX_OK);
        return;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
}


ngx_str_t
ngx_http_fc_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_str_t         value;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_str_null(&value);
    len = ngx_strlen(name);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return h[i].value;
        }
    }

    return value;
}


ngx_str_t *
ngx_http_fc_secret(ngx_http_request_t *r, const char *name)
{
    size_t                    len;
    ngx_uint_t                i;
    ngx_http_fc_secret_t     *s;
    ngx_http_fc_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_http_fc_module);

    if (fmcf->secrets == NULL) {
        return NULL;
    }

    len = ngx_strlen(name);
    s = fmcf->secrets->elts;

    for (i = 0; i < fmcf->secrets->nelts; i++) {
        if (s[i].name.len == len
            && ngx_strncmp(s[i].name.data, name, len) == 0)
        {
            return &s[i].value;
        }
    }

    return NULL;
}


static void
ngx_http_fc_health(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_fc_send_json(ctx->request, NGX_HTTP_OK,
                          json_pack("{s:s}", "status", "ok"));
}


/*
 * /ready asks both backends at once and answers when both replied; each
 * pool fails fast when its backend is down, so this never hangs longer
 * than a backend timeout.
 */
static void
ngx_http_fc_ready(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_request_t   *r;
    ngx_fc_pg_query_t    *q;
    ngx_fc_redis_cmd_t   *cmd;
    ngx_http_fc_ready_t  *rd;
    static const char    *ping[] = { "PING" };
    static size_t         ping_len[] = { 4 };

    r = ctx->request;

    rd = ngx_pcalloc(r->pool, sizeof(ngx_http_fc_ready_t));
    q = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));

    if (rd == NULL || q == NULL || cmd == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    rd->ctx = ctx;

    q->request = r;
    q->sql = "SELECT 1";
    q->handler = ngx_http_fc_ready_pg_done;
    q->data = rd;

    cmd->request = r;
    cmd->argc = 1;
    cmd->argv = ping;
    cmd->argvlen = ping_len;
    cmd->handler = ngx_http_fc_ready_redis_done;
    cmd->data = rd;

    ctx->pending = 0;

    if (ngx_fc_pg_send(q) == NGX_OK) {
        ctx->pending++;
    }

    if (ngx_fc_redis_send(cmd) == NGX_OK) {
        ctx->pending++;
    }

    if (ctx->pending == 0) {
        ngx_http_fc_ready_finish(rd);
    }
}


static void
ngx_http_fc_ready_pg_done(ngx_fc_pg_query_t *q)
{
    ngx_http_fc_ready_t  *rd = q->data;

    rd->pg_ok = (q->rc == NGX_OK);

    if (--rd->ctx->pending == 0) {
        ngx_http_fc_ready_finish(rd);
    }
}


static void
ngx_http_fc_ready_redis_done(ngx_fc_redis_cmd_t *cmd)
{
    ngx_http_fc_ready_t  *rd = cmd->data;

    rd->redis_ok = (cmd->rc == NGX_OK && cmd->reply != NULL
                    && cmd->reply->type == REDIS_REPLY_STATUS);

    if (--rd->ctx->pending == 0) {
        ngx_http_fc_ready_finish(rd);
    }
}


static void
ngx_http_fc_ready_finish(ngx_http_fc_ready_t *rd)
{
    json_t       *checks;
    const char   *msg;

    checks = json_pack("{s:s,s:s}",
                       "postgres", rd->pg_ok ? "ok" : "unavailable",
                       "redis", rd->redis_ok ? "ok" : "unavailable");

    if (rd->pg_ok && rd->redis_ok) {
        ngx_http_fc_send_json(rd->ctx->request, NGX_HTTP_OK,
                              json_pack("{s:s,s:o}", "status", "ready",
                                        "checks", checks));
        return;
    }

    msg = rd->pg_ok ? "redis is unavailable"
                    : rd->redis_ok ? "postgres is unavailable"
                                   : "postgres and redis are unavailable";

    ngx_http_fc_send_json(rd->ctx->request, NGX_HTTP_SERVICE_UNAVAILABLE,
                          json_pack("{s:{s:s,s:s,s:o}}", "error",
                                    "code", "not_ready", "message", msg,
                                    "checks", checks));
}


static void
ngx_http_fc_metrics(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_fc_metrics_render(ctx, NULL);
}


/*
 * /metrics/platform: gauges that only PostgreSQL knows (the outbox, the
 * payments).  Kept apart from /metrics, which never touches a backend,
 * so that reading nginx's counters never changes them and works in an
 * outage.
 */
static void
ngx_http_fc_metrics_platform(ngx_http_fc_ctx_t *ctx)
{
    ngx_fc_pg_query_t   *q;
    ngx_http_request_t  *r;

    r = ctx->request;

    q = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    if (q == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    q->request = r;
    q->sql = "SELECT fc_metrics_text()";
    q->timeout = 1000;
    q->handler = ngx_http_fc_metrics_pg_done;
    q->data = ctx;

    if (ngx_fc_pg_send(q) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


static void
ngx_http_fc_metrics_pg_done(ngx_fc_pg_query_t *q)
{
    if (q->rc != NGX_OK || PQntuples(q->result) != 1
        || PQgetisnull(q->result, 0, 0))
    {
        ngx_http_fc_finalize_error(q->request, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "postgres is unavailable");
        return;
    }

    ngx_http_fc_send_body(q->request, NGX_HTTP_OK,
                          "text/plain; version=0.0.4",
                          (u_char *) PQgetvalue(q->result, 0, 0),
                          PQgetlength(q->result, 0, 0));
}


/*
 * Prometheus text exposition of the shared counters, with extra lines
 * appended when given.
 */
static void
ngx_http_fc_metrics_render(ngx_http_fc_ctx_t *ctx, ngx_str_t *extra)
{
    u_char                 *buf, *p, *end;
    size_t                  size;
    ngx_uint_t              i, j, k, nroutes, cumulative;
    ngx_http_request_t     *r;
    ngx_http_fc_metrics_t  *m;
    ngx_str_t              *name;
    ngx_atomic_uint_t       v, busy, idle, waiting;
    static const char      *backends[] = { "postgres", "redis" };
    static const char      *errors[] = {
        "connect", "timeout", "queue", "io"
    };
    static ngx_str_t        unmatched = ngx_string("other");

    r = ctx->request;
    m = ngx_http_fc_shm;

    if (m == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no metrics zone is configured");
        return;
    }

    nroutes = sizeof(ngx_http_fc_routes) / sizeof(ngx_http_fc_route_t) - 1;
    size = 4096 + (nroutes + 1) * NGX_HTTP_FC_STATUS_N * 96
           + NGX_FC_BACKEND_N * (NGX_HTTP_FC_BUCKETS_N + 8) * 96
           + (extra ? extra->len + 1 : 0);

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    p = buf;
    end = buf + size;

    p = ngx_slprintf(p, end,
            "# HELP fc_http_requests_total Requests by route and status.\n"
            "# TYPE fc_http_requests_total counter\n");

    for (i = 0; i <= nroutes; i++) {
        k = (i == nroutes) ? NGX_HTTP_FC_ROUTES_MAX : i;
        name = (i == nroutes) ? &unmatched : &ngx_http_fc_routes[i].name;

        for (j = 0; j < NGX_HTTP_FC_STATUS_N; j++) {
            v = m->requests[k][j];
            if (v == 0) {
                continue;
            }

            if (j == NGX_HTTP_FC_STATUS_N - 1) {
                p = ngx_slprintf(p, end, "fc_http_requests_total"
                                 "{route=\"%V\",status=\"other\"} %uA\n",
                                 name, v);
            } else {
                p = ngx_slprintf(p, end, "fc_http_requests_total"
                                 "{route=\"%V\",status=\"%ui\"} %uA\n",
                                 name, ngx_http_fc_statuses[j], v);
            }
        }
    }

    p = ngx_slprintf(p, end,
            "# HELP fc_backend_errors_total Failed backend calls by kind.\n"
            "# TYPE fc_backend_errors_total counter\n");

    for (i = 0; i < NGX_FC_BACKEND_N; i++) {
        for (j = 0; j < NGX_FC_ERR_N; j++) {
            p = ngx_slprintf(p, end, "fc_backend_errors_total"
                             "{backend=\"%s\",kind=\"%s\"} %uA\n",
                             backends[i], errors[j],
                             m->backend_errors[i][j]);
        }
    }

    p = ngx_slprintf(p, end,
            "# HELP fc_backend_latency_seconds Backend round trips.\n"
            "# TYPE fc_backend_latency_seconds histogram\n");

    for (i = 0; i < NGX_FC_BACKEND_N; i++) {
        cumulative = 0;

        for (j = 0; j < NGX_HTTP_FC_BUCKETS_N; j++) {
            cumulative += m->latency_buckets[i][j];
            p = ngx_slprintf(p, end, "fc_backend_latency_seconds_bucket"
                             "{backend=\"%s\",le=\"%ui.%03ui\"} %ui\n",
                             backends[i], ngx_http_fc_buckets[j] / 1000,
                             ngx_http_fc_buckets[j] % 1000, cumulative);
        }

        v = m->latency_sum_ms[i];

        p = ngx_slprintf(p, end,
                "fc_backend_latency_seconds_bucket"
                "{backend=\"%s\",le=\"+Inf\"} %uA\n"
                "fc_backend_latency_seconds_sum{backend=\"%s\"} "
                "%uA.%03uA\n"
                "fc_backend_latency_seconds_count{backend=\"%s\"} %uA\n",
                backends[i], m->latency_count[i],
                backends[i], v / 1000, v % 1000,
                backends[i], m->latency_count[i]);
    }

    p = ngx_slprintf(p, end,
            "# HELP fc_pool_connections Backend connections of all "
            "workers by state.\n"
            "# TYPE fc_pool_connections gauge\n");

    for (i = 0; i < NGX_FC_BACKEND_N; i++) {
        busy = idle = 0;

        for (j = 0; j < NGX_HTTP_FC_WORKERS_MAX; j++) {
            busy += m->pool[j][i][0];
            idle += m->pool[j][i][1];
        }

        p = ngx_slprintf(p, end,
                "fc_pool_connections{backend=\"%s\",state=\"busy\"} %uA\n"
                "fc_pool_connections{backend=\"%s\",state=\"idle\"} %uA\n",
                backends[i], busy, backends[i], idle);
    }

    p = ngx_slprintf(p, end,
            "# HELP fc_pool_waiting Requests of all workers waiting for a "
            "backend connection.\n"
            "# TYPE fc_pool_waiting gauge\n");

    for (i = 0; i < NGX_FC_BACKEND_N; i++) {
        waiting = 0;

        for (j = 0; j < NGX_HTTP_FC_WORKERS_MAX; j++) {
            waiting += m->pool[j][i][2];
        }

        p = ngx_slprintf(p, end, "fc_pool_waiting{backend=\"%s\"} %uA\n",
                         backends[i], waiting);
    }

    if (extra && extra->len) {
        p = ngx_cpymem(p, extra->data, ngx_min(extra->len, (size_t) (end - p)));

        if (p < end && p[-1] != '\n') {
            *p++ = '\n';
        }
    }

    ngx_http_fc_send_body(r, NGX_HTTP_OK, "text/plain; version=0.0.4",
                          buf, p - buf);
}


/*
 * Where the bank's payment page sends the payer back.  The money is
 * credited by the bank's notification, not by this visit, so the page
 * only says what happens next.
 */
static void
ngx_http_fc_topup_success(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_fc_send_json(ctx->request, NGX_HTTP_OK,
                          json_pack("{s:s,s:s}", "status", "paid",
                                    "message", "thank you: the contract "
                                    "is credited as soon as the bank "
                                    "confirms the payment"));
}


static void
ngx_http_fc_test_pg_sleep(ngx_http_fc_ctx_t *ctx)
{
    ngx_str_t            value;
    ngx_int_t            seconds;
    ngx_http_request_t  *r;
    ngx_fc_pg_query_t   *q;
    const char         **params;

    r = ctx->request;

    if (ngx_http_arg(r, (u_char *) "seconds", 7, &value) != NGX_OK) {
        ngx_str_set(&value, "1");
    }

    seconds = ngx_atoi(value.data, value.len);
    if (seconds == NGX_ERROR || seconds > 30) {
        ngx_http_fc_finalize_error(r, 422, "validation_failed",
                                   "seconds: a whole number up to 30");
        return;
    }

    q = ngx_pcalloc(r->pool, sizeof(ngx_fc_pg_query_t));
    params = ngx_pcalloc(r->pool, sizeof(char *));
    if (q == NULL || params == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    params[0] = (char *) ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    if (params[0] == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    *ngx_sprintf((u_char *) params[0], "%i", seconds) = '\0';

    q->request = r;
    q->sql = "SELECT pg_sleep($1::int), $1::int AS slept";
    q->nparams = 1;
    q->params = params;
    q->timeout = (seconds + 5) * 1000;
    q->handler = ngx_http_fc_test_pg_done;
    q->data = ctx;

    if (ngx_fc_pg_send(q) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


static void
ngx_http_fc_test_pg_done(ngx_fc_pg_query_t *q)
{
    if (q->rc != NGX_OK) {
        ngx_http_fc_finalize_error(q->request, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "postgres is unavailable");
        return;
    }

    ngx_http_fc_send_json(q->request, NGX_HTTP_OK,
                          json_pack("{s:i}", "slept",
                                    atoi(PQgetvalue(q->result, 0, 1))));
}


static void
ngx_http_fc_test_redis(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_request_t   *r;
    ngx_fc_redis_cmd_t   *cmd;
    static const char    *argv[] = { "INCR", "fc:test:counter" };
    static size_t         argvlen[] = { 4, 15 };

    r = ctx->request;

    cmd = ngx_pcalloc(r->pool, sizeof(ngx_fc_redis_cmd_t));
    if (cmd == NULL) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
        return;
    }

    cmd->request = r;
    cmd->argc = 2;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->handler = ngx_http_fc_test_redis_done;
    cmd->data = ctx;

    if (ngx_fc_redis_send(cmd) != NGX_OK) {
        ngx_http_fc_finalize_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "out of memory");
    }
}


static void
ngx_http_fc_test_redis_done(ngx_fc_redis_cmd_t *cmd)
{
    if (cmd->rc != NGX_OK || cmd->reply == NULL
        || cmd->reply->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_fc_finalize_error(cmd->request,
                                   NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "service_unavailable",
                                   "redis is unavailable");
        return;
    }

    ngx_http_fc_send_json(cmd->request, NGX_HTTP_OK,
                          json_pack("{s:I}", "counter",
                                    (json_int_t) cmd->reply->integer));
}


static void
ngx_http_fc_test_echo(ngx_http_fc_ctx_t *ctx)
{
    ngx_http_fc_send_json(ctx->request, NGX_HTTP_OK,
                          json_pack("{s:O}", "echo", ctx->body));
}


ngx_int_t
ngx_http_fc_thread_run(ngx_http_request_t *r, ngx_http_fc_thread_pt work,
    ngx_http_fc_thread_pt done, void *data)
{
    ngx_thread_task_t         *task;
    ngx_http_fc_thread_ctx_t  *tc;
    ngx_http_fc_main_conf_t   *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_http_fc_module);

    task = ngx_thread_task_alloc(r->pool, sizeof(ngx_http_fc_thread_ctx_t));
    if (task == NULL) {
        return NGX_ERROR;
    }

    tc = task->ctx;
    tc->request = r;
    tc->work = work;
    tc->done = done;
    tc->data = data;

    task->handler = ngx_http_fc_thread_handler;
    task->event.data = tc;
    task->event.handler = ngx_http_fc_thread_event_handler;

    if (ngx_thread_task_post(fmcf->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A blocked request is not freed while the task runs, even if the
     * client goes away: the thread still uses memory of r->pool.
     */
    r->main->blocked++;
    r->aio = 1;
    r->write_event_handler = ngx_http_fc_thread_resume;

    return NGX_OK;
}


static void
ngx_http_fc_thread_handler(void *data, ngx_log_t *log)
{
    ngx_http_fc_thread_ctx_t  *tc = data;

    tc->work(tc->data);
}


static void
ngx_http_fc_thread_event_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_fc_thread_ctx_t  *tc;

    tc = ev->data;
    r = tc->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->main->blocked--;
    r->aio = 0;

    if (r->write_event_handler == ngx_http_fc_thread_resume) {
        r->write_event_handler = ngx_http_request_empty_handler;
        tc->done(tc->data);

    } else {
        /* the request was terminated meanwhile: let nginx close it */
        r->write_event_handler(r);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_fc_thread_resume(ngx_http_request_t *r)
{
    /* a marker only: a write event while the task runs changes nothing */
}


void
ngx_http_fc_metrics_backend_latency(ngx_uint_t backend, ngx_msec_t ms)
{
    ngx_uint_t              i;
    ngx_http_fc_metrics_t  *m;

    m = ngx_http_fc_shm;
    if (m == NULL || backend >= NGX_FC_BACKEND_N) {
        return;
    }

    for (i = 0; i < NGX_HTTP_FC_BUCKETS_N; i++) {
        if (ms <= ngx_http_fc_buckets[i]) {
            (void) ngx_atomic_fetch_add(&m->latency_buckets[backend][i], 1);
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&m->latency_count[backend], 1);
    (void) ngx_atomic_fetch_add(&m->latency_sum_ms[backend], ms);
}


void
ngx_http_fc_metrics_backend_error(ngx_uint_t backend, ngx_uint_t kind)
{
    ngx_http_fc_metrics_t  *m;

    m = ngx_http_fc_shm;
    if (m == NULL || backend >= NGX_FC_BACKEND_N || kind >= NGX_FC_ERR_N) {
        return;
    }

    (void) ngx_atomic_fetch_add(&m->backend_errors[backend][kind], 1);
}


void
ngx_http_fc_metrics_pool(ngx_uint_t backend, ngx_uint_t busy,
    ngx_uint_t idle, ngx_uint_t waiting)
{
    ngx_http_fc_metrics_t  *m;

    m = ngx_http_fc_shm;
    if (m == NULL || backend >= NGX_FC_BACKEND_N
        || ngx_worker >= NGX_HTTP_FC_WORKERS_MAX)
    {
        return;
    }

    m->pool[ngx_worker][backend][0] = busy;
    m->pool[ngx_worker][backend][1] = idle;
    m->pool[ngx_worker][backend][2] = waiting;
}


static ngx_uint_t
ngx_http_fc_status_slot(ngx_uint_t status)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_FC_STATUS_N - 1; i++) {
        if (ngx_http_fc_statuses[i] == status) {
            return i;
        }
    }

    return NGX_HTTP_FC_STATUS_N - 1;
}


static ngx_int_t
ngx_http_fc_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t              route, status;
    ngx_http_fc_ctx_t      *ctx;
    ngx_http_fc_loc_conf_t *flcf;

    if (ngx_http_fc_shm == NULL || r != r->main) {
        return NGX_OK;
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_fc_module);
    if (flcf->group.len == 0) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_fc_module);
    route = ctx ? ctx->route_index : NGX_HTTP_FC_ROUTES_MAX;

    status = r->headers_out.status;
    if (r->connection->error && status == 0) {
        status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
    }

    (void) ngx_atomic_fetch_add(
        &ngx_http_fc_shm->requests[route][ngx_http_fc_status_slot(status)],
        1);

    return NGX_OK;
}


static ngx_int_t
ngx_http_fc_init_metrics_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t        *shpool;
    ngx_http_fc_metrics_t  *m;

    if (data) {
        shm_zone->data = data;
        ngx_http_fc_shm = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_http_fc_shm = shpool->data;
        return NGX_OK;
    }

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_fc_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    shpool->data = m;
    shm_zone->data = m;
    ngx_http_fc_shm = m;

    return NGX_OK;
}


static char *
ngx_http_fc_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fc_loc_conf_t  *flcf = conf;

    ngx_str_t                 *value;
    ngx_http_fc_route_t       *route;
    ngx_http_core_loc_conf_t  *clcf;

    if (flcf->group.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!(value[1].len == 5
          && ngx_strncmp(value[1].data, "error", 5) == 0)
        && !(value[1].len == 9
             && ngx_strncmp(value[1].data, "not_found", 9) == 0))
    {
        for (route = ngx_http_fc_routes; route->handler; route++) {
            if (route->group.len == value[1].len
                && ngx_strncmp(route->group.data, value[1].data,
                               value[1].len) == 0)
            {
                break;
            }
        }

        if (route->handler == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown fc_api group \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    flcf->group = value[1];

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_fc_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_fc_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fc_main_conf_t  *fmcf = conf;

    ssize_t     size;
    ngx_str_t  *value, name;

    if (fmcf->metrics_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR
        || (size_t) size < sizeof(ngx_http_fc_metrics_t) + 8 * ngx_pagesize)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fc_metrics_zone \"%V\" is too small, "
                           "at least %uzk is needed", &value[1],
                           (sizeof(ngx_http_fc_metrics_t)
                            + 8 * ngx_pagesize) / 1024 + 1);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "fc_metrics");

    fmcf->metrics_zone = ngx_shared_memory_add(cf, &name, size,
                                               &ngx_http_fc_module);
    if (fmcf->metrics_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    fmcf->metrics_zone->init = ngx_http_fc_init_metrics_zone;

    return NGX_CONF_OK;
}


/*
 * fc_secret name file: secrets never appear in nginx.conf itself.  The
 * file is read once at configuration time by the master, so workers
 * need no access to it.
 */
static char *
ngx_http_fc_secret_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_fc_main_conf_t  *fmcf = conf;

    u_char                *p;
    ssize_t                n;
    ngx_fd_t               fd;
    ngx_str_t             *value;
    ngx_file_t             file;
    ngx_file_info_t        fi;
    ngx_http_fc_secret_t  *s;

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[2], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (fmcf->secrets == NULL) {
        fmcf->secrets = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_http_fc_secret_t));
        if (fmcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    fd = ngx_open_file(value[2].data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "fc_secret \"%V\": cannot open \"%V\"",
                           &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 4096)
    {
        ngx_close_file(fd);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fc_secret \"%V\": \"%V\" is not a file of at "
                           "most 4096 bytes", &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (p == NULL) {
        ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = value[2];
    file.log = cf->log;

    n = ngx_read_file(&file, p, ngx_file_size(&fi), 0);
    ngx_close_file(fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'
                     || p[n - 1] == ' '))
    {
        n--;
    }

    if (n < 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fc_secret \"%V\": \"%V\" must hold at least 16 "
                           "bytes", &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push(fmcf->secrets);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s->name = value[1];
    s->value.data = p;
    s->value.len = n;

    return NGX_CONF_OK;
}


static void *
ngx_http_fc_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_fc_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_fc_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    fmcf->test_routes = NGX_CONF_UNSET;
    fmcf->hold_ttl = NGX_CONF_UNSET;

    return fmcf;
}


static char *
ngx_http_fc_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_fc_main_conf_t  *fmcf = conf;

    ngx_conf_init_value(fmcf->test_routes, 0);
    ngx_conf_init_value(fmcf->hold_ttl, NGX_HTTP_FC_HOLD_TTL);

    if (fmcf->hold_ttl < 60 || fmcf->hold_ttl > 7 * 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fc_hold_ttl must be from 1m to 7d");
        return NGX_CONF_ERROR;
    }

    if (fmcf->thread_pool_name.len == 0) {
        ngx_str_set(&fmcf->thread_pool_name, "default");
    }

    fmcf->thread_pool = ngx_thread_pool_add(cf, &fmcf->thread_pool_name);
    if (fmcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_http_fc_mcf = fmcf;

    return NGX_CONF_OK;
}


static void *
ngx_http_fc_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_fc_loc_conf_t));
}


static char *
ngx_http_fc_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_fc_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_fc_bank_add_variables(cf);
}


static ngx_int_t
ngx_http_fc_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (sizeof(ngx_http_fc_routes) / sizeof(ngx_http_fc_route_t)
        > NGX_HTTP_FC_ROUTES_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "too many fc routes");
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_fc_log_handler;

    return NGX_OK;
}

/*
 * Shared declarations of the fuel card platform's nginx modules.
 *
 * The platform is three HTTP modules in one dynamic library:
 * ngx_http_fc_module (routes, JSON errors, metrics, thread pool),
 * ngx_http_fc_pg_module (PostgreSQL pool) and ngx_http_fc_redis_module
 * (Redis pool).  The pools report to the metrics zone through the
 * functions below; they are no-ops when no zone is configured.
 */

#ifndef _NGX_HTTP_FC_MODULE_H_INCLUDED_
#define _NGX_HTTP_FC_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


#define NGX_FC_BACKEND_PG        0
#define NGX_FC_BACKEND_REDIS     1
#define NGX_FC_BACKEND_N         2

#define NGX_FC_ERR_CONNECT       0
#define NGX_FC_ERR_TIMEOUT       1
#define NGX_FC_ERR_QUEUE         2
#define NGX_FC_ERR_IO            3
#define NGX_FC_ERR_N             4

/* route flags */
#define NGX_HTTP_FC_JSON_BODY    0x01    /* a JSON object body is required */
#define NGX_HTTP_FC_TEST_ONLY    0x02    /* only with "fc_test_routes on" */

#define NGX_HTTP_FC_JSON_OPTIONAL 0x04   /* parse a JSON body if sent */
#define NGX_HTTP_FC_RAW_BODY     0x08    /* pass the body's bytes as is */

#define NGX_HTTP_FC_MAX_PARAMS   4


typedef struct ngx_http_fc_ctx_s  ngx_http_fc_ctx_t;

typedef void (*ngx_http_fc_handler_pt)(ngx_http_fc_ctx_t *ctx);

typedef struct {
    ngx_str_t                  group;
    ngx_uint_t                 method;
    ngx_str_t                  pattern;    /* "{}" matches one segment */
    ngx_http_fc_handler_pt     handler;
    ngx_str_t                  name;       /* label in metrics */
    ngx_uint_t                 flags;
} ngx_http_fc_route_t;


/*
 * Per-request state of an API call.  A route handler is called once the
 * body is read and parsed; from then on it owns the request and must end
 * it exactly once with ngx_http_fc_send_json() or
 * ngx_http_fc_finalize_error(), possibly later from a backend callback.
 */
struct ngx_http_fc_ctx_s {
    ngx_http_request_t        *request;
    ngx_http_fc_route_t       *route;
    ngx_uint_t                 route_index;
    ngx_str_t                  params[NGX_HTTP_FC_MAX_PARAMS];
    ngx_uint_t                 nparams;
    json_t                    *body;       /* decref'ed with r->pool */
    ngx_str_t                  raw;        /* with NGX_HTTP_FC_RAW_BODY */
    void                      *data;       /* the handler's own state */
    ngx_uint_t                 pending;    /* outstanding backend calls */
    ngx_uint_t                 failed;
};


typedef void (*ngx_http_fc_thread_pt)(void *data);


/* one finished round trip to a backend, successful or not */
void ngx_http_fc_metrics_backend_latency(ngx_uint_t backend,
    ngx_msec_t ms);

/* a failed attempt: connect refused, timed out, queue full, broken I/O */
void ngx_http_fc_metrics_backend_error(ngx_uint_t backend, ngx_uint_t kind);

/* this worker's pool right now; called whenever a pool changes */
void ngx_http_fc_metrics_pool(ngx_uint_t backend, ngx_uint_t busy,
    ngx_uint_t idle, ngx_uint_t waiting);

/*
 * Sends {"error":{"code":...,"message":...}} with the status and
 * finalizes the request.  The message is copied, so it may live on the
 * stack.
 */
void ngx_http_fc_finalize_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);

/* the same with printf-style formatting of the message (ngx_sprintf) */
void ngx_http_fc_finalize_errorf(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *fmt, ...);

/* sends the JSON value (its reference is stolen) and finalizes */
void ngx_http_fc_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json);

/* sends a prepared body with a content type and finalizes */
void ngx_http_fc_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, u_char *data, size_t len);

/*
 * Runs work(data) in the configured thread pool, then done(data) back in
 * the worker's event loop, unless the request ended meanwhile.  Returns
 * NGX_OK or NGX_ERROR when the task could not be posted.
 */
ngx_int_t ngx_http_fc_thread_run(ngx_http_request_t *r,
    ngx_http_fc_thread_pt work, ngx_http_fc_thread_pt done, void *data);

/* a secret configured with "fc_secret name file"; NULL if none */
ngx_str_t *ngx_http_fc_secret(ngx_http_request_t *r, const char *name);

/* the value of a cookie or header, or an empty string */
ngx_str_t ngx_http_fc_header(ngx_http_request_t *r, const char *name);

/* the test clock (only with "fc_test_routes on"); NGX_DECLINED if none */
ngx_int_t ngx_http_fc_test_now(ngx_http_request_t *r, time_t *now);

/* how long an approval holds its money before it expires, seconds */
time_t ngx_http_fc_hold_ttl(ngx_http_request_t *r);

/* the request context; NULL outside an fc_api location */
ngx_http_fc_ctx_t *ngx_http_fc_get_ctx(ngx_http_request_t *r);


#endif /* _NGX_HTTP_FC_MODULE_H_INCLUDED_ */

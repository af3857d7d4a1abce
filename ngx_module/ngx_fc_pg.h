
/*
 * ngx_http_fc_pg_module: a non-blocking PostgreSQL connection pool, one
 * per worker process, driven by nginx events.
 *
 * A caller fills the public members of an ngx_fc_pg_query_t allocated
 * from r->pool and passes it to ngx_fc_pg_send().  The query waits for
 * a connection if all are busy, runs as a single statement with text
 * parameters, and its handler is called exactly once, always later from
 * an event, with rc and result set:
 *
 *   NGX_OK                        PGRES_TUPLES_OK or PGRES_COMMAND_OK
 *   NGX_DECLINED                  the server answered with an error;
 *                                 PG_DIAG_SQLSTATE and the message are
 *                                 in result
 *   NGX_HTTP_SERVICE_UNAVAILABLE  no answer: connect failed, timeout,
 *                                 broken connection, queue full or
 *                                 waited too long; result is NULL
 *
 * The pool never touches r->main->count and never finalizes the
 * request.  If the request is freed before the answer, the query is
 * abandoned: its handler is not called, and a statement already sent
 * runs to completion on its connection, which then returns to the pool.
 */

#ifndef _NGX_FC_PG_H_INCLUDED_
#define _NGX_FC_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <libpq-fe.h>


typedef struct ngx_fc_pg_query_s    ngx_fc_pg_query_t;
typedef struct ngx_fc_pg_conn_s     ngx_fc_pg_conn_t;
typedef struct ngx_fc_pg_pool_s     ngx_fc_pg_pool_t;
typedef struct ngx_fc_pg_cleanup_s  ngx_fc_pg_cleanup_t;

typedef void (*ngx_fc_pg_handler_pt)(ngx_fc_pg_query_t *q);


struct ngx_fc_pg_query_s {
    /* set by the caller; q is allocated from r->pool */
    ngx_http_request_t     *request;
    const char             *sql;        /* $1..$n placeholders */
    int                     nparams;
    const char            **params;     /* text values, NULL = SQL NULL */
    ngx_msec_t              timeout;    /* 0: fc_pg_query_timeout */
    ngx_fc_pg_handler_pt    handler;
    void                   *data;

    /* set by the pool before handler is called */
    ngx_int_t               rc;
    PGresult               *result;     /* PQclear'ed by a cleanup of
                                           r->pool; may be NULL */

    /* private to the pool */
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_conn_t       *conn;
    ngx_fc_pg_cleanup_t    *cleanup;
    ngx_queue_t             queue;      /* in the wait queue */
    ngx_event_t             event;      /* queue timer, completion */
    ngx_msec_t              start;
    ngx_uint_t              state;
    unsigned                sent:1;
};


/*
 * Accepts q for execution.  Returns NGX_OK, after which q->handler is
 * called exactly once from a later event unless the request is freed
 * first, or NGX_ERROR when memory could not be allocated (the handler
 * is then never called).  q may be sent again from its handler; each
 * result stays valid until r->pool is destroyed.
 */
ngx_int_t ngx_fc_pg_send(ngx_fc_pg_query_t *q);

/* the same for "SELECT 1": sql, nparams and params are overwritten */
ngx_int_t ngx_fc_pg_ping(ngx_fc_pg_query_t *q);

/*
 * Frees q's latest result now rather than with r->pool, for a caller
 * that sends many queries in one request and must not keep every
 * result until it ends; q->result is NULL afterwards.
 */
void ngx_fc_pg_free_result(ngx_fc_pg_query_t *q);


extern ngx_module_t  ngx_http_fc_pg_module;


#endif /* _NGX_FC_PG_H_INCLUDED_ */


/*
 * ngx_http_fc_pg_module: a non-blocking PostgreSQL connection pool.
 *
 * Each worker process owns one pool of libpq connections to the server
 * named by "fc_pg_server".  Connections are opened on demand up to
 * fc_pg_pool_size, kept idle up to fc_pg_keepalive, and a query that
 * finds every connection busy waits in a bounded queue.  libpq does the
 * protocol; nginx events tell it when its socket is ready.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_fc_module.h"
#include "ngx_fc_pg.h"


#define NGX_FC_PG_RETRY_DELAY        1000    /* ms between connect probes */
#define NGX_FC_PG_PASSWORD_MAX       1024    /* bytes in a password file */
#define NGX_FC_PG_ERROR_LEN          256     /* bytes of a libpq error */
#define NGX_FC_PG_KEYWORDS_N         12      /* libpq keywords, with NULL */

#define NGX_FC_PG_QUERY_IDLE         0       /* not sent, or handler called */
#define NGX_FC_PG_QUERY_WAITING      1       /* in the wait queue */
#define NGX_FC_PG_QUERY_ACTIVE       2       /* owned by a connection */
#define NGX_FC_PG_QUERY_POSTED       3       /* rc set, handler posted */

#define NGX_FC_PG_CONN_FREE          0
#define NGX_FC_PG_CONN_CONNECTING    1
#define NGX_FC_PG_CONN_RUNNING       2
#define NGX_FC_PG_CONN_IDLE          3


typedef struct {
    ngx_str_t                  host;
    ngx_str_t                  dbname;
    ngx_str_t                  user;
    ngx_str_t                  password;
    ngx_str_t                  application_name;
    ngx_str_t                  sslmode;
    ngx_uint_t                 port;
    ngx_str_t                  addr_text;   /* for the log */

    const char                *keywords[NGX_FC_PG_KEYWORDS_N];
    const char                *values[NGX_FC_PG_KEYWORDS_N];

    ngx_uint_t                 pool_size;
    ngx_uint_t                 keepalive;
    ngx_msec_t                 idle_timeout;
    ngx_uint_t                 queue_size;
    ngx_msec_t                 queue_timeout;
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 query_timeout;

    ngx_fc_pg_pool_t          *pool;        /* this worker's */
} ngx_fc_pg_main_conf_t;


struct ngx_fc_pg_conn_s {
    ngx_queue_t                queue;       /* free, busy or idle list */
    ngx_fc_pg_pool_t          *pool;
    PGconn                    *pgconn;
    ngx_connection_t          *connection;  /* wraps PQsocket() */
    ngx_fc_pg_query_t         *query;       /* NULL if none or abandoned */
    PGresult                  *result;      /* the last one read so far */
    ngx_uint_t                 state;
    ngx_msec_t                 deadline;    /* of the connect */
    dev_t                      sock_dev;
    ino_t                      sock_ino;
    unsigned                   want_write:1;
    unsigned                   flushing:1;
    unsigned                   reused:1;
};


struct ngx_fc_pg_pool_s {
    ngx_fc_pg_main_conf_t     *conf;
    ngx_log_t                 *log;
    ngx_fc_pg_conn_t          *conns;       /* pool_size slots */
    ngx_queue_t                free;
    ngx_queue_t                busy;
    ngx_queue_t                idle;
    ngx_queue_t                waiting;     /* ngx_fc_pg_query_t */
    ngx_uint_t                 nbusy;       /* connecting or running */
    ngx_uint_t                 nidle;
    ngx_uint_t                 nwaiting;
    ngx_uint_t                 nconnecting;
    ngx_uint_t                 reported[3];
    ngx_msec_t                 retry_at;
    unsigned                   down:1;
};


/* one per send; owns the result delivered by that send */
struct ngx_fc_pg_cleanup_s {
    ngx_fc_pg_query_t         *query;
    PGresult                  *result;
};


static void ngx_fc_pg_acquire(ngx_fc_pg_query_t *q);
static void ngx_fc_pg_query_post(ngx_fc_pg_query_t *q, ngx_int_t rc,
    PGresult *res);
static void ngx_fc_pg_query_handler(ngx_event_t *ev);
static void ngx_fc_pg_query_cleanup(void *data);

static void ngx_fc_pg_conn_open(ngx_fc_pg_pool_t *pool,
    ngx_fc_pg_query_t *q);
static ngx_int_t ngx_fc_pg_conn_wrap(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_unwrap(ngx_fc_pg_conn_t *pc);
static ngx_uint_t ngx_fc_pg_conn_socket_changed(ngx_fc_pg_conn_t *pc);
static ngx_int_t ngx_fc_pg_conn_write_event(ngx_fc_pg_conn_t *pc,
    ngx_uint_t on);
static void ngx_fc_pg_conn_handler(ngx_event_t *ev);
static void ngx_fc_pg_conn_timeout(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_connect(ngx_fc_pg_conn_t *pc);
static ngx_int_t ngx_fc_pg_conn_run(ngx_fc_pg_conn_t *pc,
    ngx_fc_pg_query_t *q);
static void ngx_fc_pg_conn_flush(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_read(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_done(ngx_fc_pg_conn_t *pc);
static ngx_int_t ngx_fc_pg_error_rc(PGresult *res);
static void ngx_fc_pg_conn_release(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_idle_read(ngx_fc_pg_conn_t *pc);
static void ngx_fc_pg_conn_fail(ngx_fc_pg_conn_t *pc, ngx_uint_t kind);
static void ngx_fc_pg_conn_close(ngx_fc_pg_conn_t *pc);

static void ngx_fc_pg_pool_down(ngx_fc_pg_pool_t *pool);
static void ngx_fc_pg_pool_dispatch(ngx_fc_pg_pool_t *pool);
static void ngx_fc_pg_pool_report(ngx_fc_pg_pool_t *pool);
static ngx_str_t ngx_fc_pg_error_text(u_char *buf, const char *msg);
static void ngx_fc_pg_notice(void *arg, const char *message);

static void *ngx_fc_pg_create_main_conf(ngx_conf_t *cf);
static char *ngx_fc_pg_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_fc_pg_server(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fc_pg_server_host(ngx_conf_t *cf,
    ngx_fc_pg_main_conf_t *pmcf, ngx_str_t *value);
static char *ngx_fc_pg_read_password(ngx_conf_t *cf,
    ngx_fc_pg_main_conf_t *pmcf, ngx_str_t *path);
static void ngx_fc_pg_forget_password(void *data);
static char *ngx_fc_pg_check_msec(ngx_conf_t *cf, void *post, void *data);
static ngx_int_t ngx_fc_pg_init_process(ngx_cycle_t *cycle);
static void ngx_fc_pg_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_fc_pg_pool_size_bounds = {
    ngx_conf_check_num_bounds, 1, 1024
};

static ngx_conf_num_bounds_t  ngx_fc_pg_keepalive_bounds = {
    ngx_conf_check_num_bounds, 0, 1024
};

static ngx_conf_num_bounds_t  ngx_fc_pg_queue_size_bounds = {
    ngx_conf_check_num_bounds, 0, 65536
};

static ngx_conf_post_t  ngx_fc_pg_positive_msec = {
    ngx_fc_pg_check_msec
};


static ngx_command_t  ngx_http_fc_pg_commands[] = {

    { ngx_string("fc_pg_server"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_fc_pg_server,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_pg_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, pool_size),
      &ngx_fc_pg_pool_size_bounds },

    { ngx_string("fc_pg_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, keepalive),
      &ngx_fc_pg_keepalive_bounds },

    { ngx_string("fc_pg_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, idle_timeout),
      &ngx_fc_pg_positive_msec },

    { ngx_string("fc_pg_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, queue_size),
      &ngx_fc_pg_queue_size_bounds },

    { ngx_string("fc_pg_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, queue_timeout),
      &ngx_fc_pg_positive_msec },

    { ngx_string("fc_pg_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, connect_timeout),
      &ngx_fc_pg_positive_msec },

    { ngx_string("fc_pg_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fc_pg_main_conf_t, query_timeout),
      &ngx_fc_pg_positive_msec },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_fc_pg_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_fc_pg_create_main_conf,            /* create main configuration */
    ngx_fc_pg_init_main_conf,              /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_fc_pg_module = {
    NGX_MODULE_V1,
    &ngx_http_fc_pg_module_ctx,            /* module context */
    ngx_http_fc_pg_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_fc_pg_init_process,                /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_fc_pg_exit_process,                /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * Life of a query
 *
 * ngx_fc_pg_send() never calls the handler itself: every outcome, even
 * an immediate "queue full", is stored in q and q->event is posted, so
 * the handler runs from the event loop once the pool's state is
 * consistent again.  The same event carries the queue timer while q
 * waits for a connection.
 *
 * A cleanup on r->pool is the only link from the request back to the
 * pool.  When the request is freed early it unlinks q from wherever q
 * is: out of the wait queue, off the posted queue, or away from its
 * connection, which then finishes the statement, drops the late result
 * and goes back to the pool.  So the pool never dereferences a query
 * of a freed request, and the handler is never called for one.
 */

ngx_int_t
ngx_fc_pg_send(ngx_fc_pg_query_t *q)
{
    ngx_http_request_t     *r;
    ngx_pool_cleanup_t     *cln;
    ngx_fc_pg_cleanup_t    *qc;
    ngx_fc_pg_main_conf_t  *pmcf;

    r = q->request;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_fc_pg_cleanup_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    qc = cln->data;
    qc->query = q;
    qc->result = NULL;

    cln->handler = ngx_fc_pg_query_cleanup;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_fc_pg_module);

    q->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
    q->result = NULL;
    q->pool = pmcf->pool;
    q->conn = NULL;
    q->cleanup = qc;
    q->start = ngx_current_msec;
    q->state = NGX_FC_PG_QUERY_IDLE;
    q->sent = 0;

    ngx_memzero(&q->event, sizeof(ngx_event_t));
    q->event.handler = ngx_fc_pg_query_handler;
    q->event.data = q;
    q->event.log = r->connection->log;

    if (q->pool == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "pg query failed: \"fc_pg_server\" is not configured");
        ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "pg send query %p", q);

    ngx_fc_pg_acquire(q);

    ngx_fc_pg_pool_report(q->pool);

    return NGX_OK;
}


ngx_int_t
ngx_fc_pg_ping(ngx_fc_pg_query_t *q)
{
    q->sql = "SELECT 1";
    q->nparams = 0;
    q->params = NULL;

    return ngx_fc_pg_send(q);
}


void
ngx_fc_pg_free_result(ngx_fc_pg_query_t *q)
{
    if (q->cleanup && q->cleanup->result) {
        PQclear(q->cleanup->result);
        q->cleanup->result = NULL;
    }

    q->result = NULL;
}


/*
 * Finds q a connection: an idle one (most recently used first), a new
 * one while the pool has room, or a place in the wait queue.  When none
 * is possible q is failed through its posted event.
 */
static void
ngx_fc_pg_acquire(ngx_fc_pg_query_t *q)
{
    ngx_int_t               rc;
    ngx_queue_t            *head;
    ngx_fc_pg_conn_t       *pc;
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_main_conf_t  *conf;

    pool = q->pool;
    conf = pool->conf;

    while (!ngx_queue_empty(&pool->idle)) {
        head = ngx_queue_head(&pool->idle);
        pc = ngx_queue_data(head, ngx_fc_pg_conn_t, queue);

        ngx_queue_remove(head);
        ngx_queue_insert_tail(&pool->busy, head);
        pool->nidle--;
        pool->nbusy++;

        pc->state = NGX_FC_PG_CONN_RUNNING;
        pc->connection->idle = 0;
        pc->connection->read->cancelable = 0;

        if (pc->connection->read->timer_set) {
            ngx_del_timer(pc->connection->read);
        }

        rc = ngx_fc_pg_conn_run(pc, q);

        if (rc != NGX_DECLINED) {
            return;
        }

        /* the idle connection was found broken and is closed now */
    }

    if (pool->nbusy < conf->pool_size) {
        ngx_fc_pg_conn_open(pool, q);
        return;
    }

    if (pool->nwaiting >= conf->queue_size) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg query rejected: all %ui connections to %V are "
                      "busy and %ui queries wait",
                      conf->pool_size, &conf->addr_text, pool->nwaiting);
        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG,
                                          NGX_FC_ERR_QUEUE);
        ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg query %p waits for a connection", q);

    q->state = NGX_FC_PG_QUERY_WAITING;
    ngx_queue_insert_tail(&pool->waiting, &q->queue);
    pool->nwaiting++;

    ngx_add_timer(&q->event, conf->queue_timeout);
}


/* stores the outcome and schedules the handler; res is owned by r->pool */
static void
ngx_fc_pg_query_post(ngx_fc_pg_query_t *q, ngx_int_t rc, PGresult *res)
{
    q->rc = rc;
    q->result = res;
    q->cleanup->result = res;
    q->conn = NULL;
    q->state = NGX_FC_PG_QUERY_POSTED;

    ngx_post_event(&q->event, &ngx_posted_events);
}


static void
ngx_fc_pg_query_handler(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_query_t      *q;
    ngx_http_request_t     *r;

    q = ev->data;

    if (ev->timedout) {
        ev->timedout = 0;

        pool = q->pool;

        ngx_queue_remove(&q->queue);
        pool->nwaiting--;

        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg query waited %M ms for a connection to %V, "
                      "rejected", pool->conf->queue_timeout,
                      &pool->conf->addr_text);

        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG,
                                          NGX_FC_ERR_QUEUE);
        ngx_fc_pg_pool_report(pool);

        q->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        q->result = NULL;
    }

    q->state = NGX_FC_PG_QUERY_IDLE;

    r = q->request;
    c = r->connection;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "pg query %p done: %i", q, q->rc);

    /* the handler may finalize the request and free r and q */

    q->handler(q);

    ngx_http_run_posted_requests(c);
}


static void
ngx_fc_pg_query_cleanup(void *data)
{
    ngx_fc_pg_cleanup_t  *qc = data;

    ngx_fc_pg_pool_t   *pool;
    ngx_fc_pg_query_t  *q;

    q = qc->query;

    /* a query sent again from its handler belongs to its newest cleanup */

    if (q->cleanup == qc) {

        switch (q->state) {

        case NGX_FC_PG_QUERY_WAITING:
            pool = q->pool;

            ngx_queue_remove(&q->queue);
            pool->nwaiting--;

            if (q->event.timer_set) {
                ngx_del_timer(&q->event);
            }

            ngx_fc_pg_pool_report(pool);
            break;

        case NGX_FC_PG_QUERY_ACTIVE:
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, q->pool->log, 0,
                           "pg query %p abandoned", q);

            q->conn->query = NULL;
            q->conn = NULL;
            break;

        case NGX_FC_PG_QUERY_POSTED:
            if (q->event.posted) {
                ngx_delete_posted_event(&q->event);
            }
            break;
        }

        q->state = NGX_FC_PG_QUERY_IDLE;
        q->result = NULL;
    }

    if (qc->result) {
        PQclear(qc->result);
        qc->result = NULL;
    }
}


/*
 * Opening a connection, and what happens while PostgreSQL is down
 *
 * A refused connect fails at once, but one to a host that does not
 * answer takes the whole connect timeout; with many requests each doing
 * its own attempt a short outage would turn every request into a slow
 * one.  So the pool remembers a failed connect: for the next
 * NGX_FC_PG_RETRY_DELAY ms, a query that needs a new connection fails
 * at once, and after that only one connect at a time probes the server
 * until one succeeds.  Idle connections are still used meanwhile, and
 * the first successful connect ends the outage.
 */

static void
ngx_fc_pg_conn_open(ngx_fc_pg_pool_t *pool, ngx_fc_pg_query_t *q)
{
    u_char                  buf[NGX_FC_PG_ERROR_LEN];
    PGconn                 *pgconn;
    ngx_str_t               err;
    ngx_queue_t            *head;
    ngx_fc_pg_conn_t       *pc;
    ngx_fc_pg_main_conf_t  *conf;

    conf = pool->conf;

    if (pool->down
        && (pool->nconnecting
            || (ngx_msec_int_t) (ngx_current_msec - pool->retry_at) < 0))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "pg server %V is down, query failed", &conf->addr_text);
        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG,
                                          NGX_FC_ERR_CONNECT);
        ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg connect to %V", &conf->addr_text);

    pgconn = PQconnectStartParams(conf->keywords, conf->values, 0);

    if (pgconn == NULL) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg connect to %V failed: out of memory",
                      &conf->addr_text);
        goto failed;
    }

    if (PQstatus(pgconn) == CONNECTION_BAD) {
        err = ngx_fc_pg_error_text(buf, PQerrorMessage(pgconn));
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg connect to %V failed: %V", &conf->addr_text, &err);
        PQfinish(pgconn);
        goto failed;
    }

    PQsetNoticeProcessor(pgconn, ngx_fc_pg_notice, pool->log);

    head = ngx_queue_head(&pool->free);
    pc = ngx_queue_data(head, ngx_fc_pg_conn_t, queue);

    pc->pgconn = pgconn;
    pc->query = q;
    pc->result = NULL;
    pc->deadline = ngx_current_msec + conf->connect_timeout;
    pc->want_write = 1;
    pc->flushing = 0;
    pc->reused = 0;

    /* libpq wants the socket writable first, when connect() completes */

    if (ngx_fc_pg_conn_wrap(pc) != NGX_OK) {
        PQfinish(pgconn);
        pc->pgconn = NULL;
        pc->query = NULL;
        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG,
                                          NGX_FC_ERR_CONNECT);
        ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return;
    }

    ngx_queue_remove(head);
    ngx_queue_insert_tail(&pool->busy, head);
    pool->nbusy++;
    pool->nconnecting++;

    pc->state = NGX_FC_PG_CONN_CONNECTING;

    q->conn = pc;
    q->state = NGX_FC_PG_QUERY_ACTIVE;

    ngx_add_timer(pc->connection->read, conf->connect_timeout);

    return;

failed:

    ngx_fc_pg_pool_down(pool);
    ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG, NGX_FC_ERR_CONNECT);
    ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
}


/*
 * Events on a libpq socket
 *
 * libpq reads and writes its socket itself, so nginx never sees EAGAIN
 * and cannot know when the socket is drained: PQconsumeInput() may read
 * less than is there.  With edge-triggered notification the rest could
 * then sit unnoticed.  The socket is therefore registered level-
 * triggered: a read event comes again as long as data is pending, and a
 * write event is registered only while libpq has something to flush or
 * waits for connect() to complete.  After every PQconsumeInput() the
 * results already buffered by libpq are taken before waiting again.
 *
 * The ngx_connection_t only borrows the descriptor: it is given back
 * with ngx_free_connection() and libpq closes the socket in PQfinish().
 */

static ngx_int_t
ngx_fc_pg_conn_wrap(ngx_fc_pg_conn_t *pc)
{
    ngx_socket_t       s;
    ngx_file_info_t    fi;
    ngx_connection_t  *c;

    s = PQsocket(pc->pgconn);

    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg connection to %V has no socket",
                      &pc->pool->conf->addr_text);
        return NGX_ERROR;
    }

    if (ngx_fd_info(s, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, pc->pool->log, ngx_errno,
                      ngx_fd_info_n " of pg socket %d failed", s);
        return NGX_ERROR;
    }

    pc->sock_dev = fi.st_dev;
    pc->sock_ino = fi.st_ino;

    c = ngx_get_connection(s, pc->pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    c->read->handler = ngx_fc_pg_conn_handler;
    c->write->handler = ngx_fc_pg_conn_handler;
    c->read->log = c->log;
    c->write->log = c->log;

    pc->connection = c;

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_fc_pg_conn_unwrap(pc);
        return NGX_ERROR;
    }

    if (ngx_fc_pg_conn_write_event(pc, pc->want_write) != NGX_OK) {
        ngx_fc_pg_conn_unwrap(pc);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "pg connection %p uses socket %d", pc, s);

    return NGX_OK;
}


/* the socket is closed, or about to be closed, by libpq */
static void
ngx_fc_pg_conn_unwrap(ngx_fc_pg_conn_t *pc)
{
    ngx_connection_t  *c;

    c = pc->connection;

    if (c == NULL) {
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->idle = 0;

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;

    pc->connection = NULL;
}


/*
 * libpq may close its socket inside PQconnectPoll() and open another
 * (the next address, or a retry without SSL), and the new descriptor
 * usually gets the same number; the socket's inode tells them apart.
 */
static ngx_uint_t
ngx_fc_pg_conn_socket_changed(ngx_fc_pg_conn_t *pc)
{
    ngx_socket_t     s;
    ngx_file_info_t  fi;

    s = PQsocket(pc->pgconn);

    if (s != pc->connection->fd) {
        return 1;
    }

    if (ngx_fd_info(s, &fi) == NGX_FILE_ERROR) {
        return 1;
    }

    return fi.st_dev != pc->sock_dev || fi.st_ino != pc->sock_ino;
}


static ngx_int_t
ngx_fc_pg_conn_write_event(ngx_fc_pg_conn_t *pc, ngx_uint_t on)
{
    ngx_event_t  *wev;

    wev = pc->connection->write;

    if (on && !wev->active) {
        return ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    if (!on && wev->active) {
        return ngx_del_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    return NGX_OK;
}


static void
ngx_fc_pg_conn_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;
    ngx_fc_pg_conn_t  *pc;
    ngx_fc_pg_pool_t  *pool;

    c = ev->data;
    pc = c->data;
    pool = pc->pool;

    if (c->close) {
        /* worker shutdown: ngx_close_idle_connections() */
        ngx_fc_pg_conn_close(pc);

    } else if (ev->timedout) {
        ngx_fc_pg_conn_timeout(pc);

    } else {

        switch (pc->state) {

        case NGX_FC_PG_CONN_CONNECTING:
            if (ev->write == pc->want_write) {
                ngx_fc_pg_conn_connect(pc);
            }
            break;

        case NGX_FC_PG_CONN_RUNNING:
            if (ev->write) {
                ngx_fc_pg_conn_flush(pc);

            } else {
                ngx_fc_pg_conn_read(pc);
            }
            break;

        case NGX_FC_PG_CONN_IDLE:
            if (!ev->write) {
                ngx_fc_pg_conn_idle_read(pc);
            }
            break;
        }
    }

    /* a slot may have been freed for a waiting query */

    ngx_fc_pg_pool_dispatch(pool);
    ngx_fc_pg_pool_report(pool);
}


static void
ngx_fc_pg_conn_timeout(ngx_fc_pg_conn_t *pc)
{
    ngx_fc_pg_main_conf_t  *conf;

    conf = pc->pool->conf;

    switch (pc->state) {

    case NGX_FC_PG_CONN_CONNECTING:
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg connect to %V timed out after %M ms",
                      &conf->addr_text, conf->connect_timeout);
        ngx_fc_pg_pool_down(pc->pool);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_CONNECT);
        break;

    case NGX_FC_PG_CONN_RUNNING:
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg query on %V timed out, connection closed",
                      &conf->addr_text);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_TIMEOUT);
        break;

    default: /* NGX_FC_PG_CONN_IDLE */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                       "pg idle connection %p closed", pc);
        ngx_fc_pg_conn_close(pc);
    }
}


static void
ngx_fc_pg_conn_connect(ngx_fc_pg_conn_t *pc)
{
    u_char                     buf[NGX_FC_PG_ERROR_LEN];
    ngx_str_t                  err;
    ngx_msec_int_t             left;
    ngx_fc_pg_pool_t          *pool;
    ngx_fc_pg_query_t         *q;
    PostgresPollingStatusType  status;

    pool = pc->pool;

    status = PQconnectPoll(pc->pgconn);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg connection %p poll: %d", pc, status);

    if (status == PGRES_POLLING_FAILED) {
        err = ngx_fc_pg_error_text(buf, PQerrorMessage(pc->pgconn));
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg connect to %V failed: %V",
                      &pool->conf->addr_text, &err);
        ngx_fc_pg_pool_down(pool);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_CONNECT);
        return;
    }

    pc->want_write = (status == PGRES_POLLING_WRITING);

    if (ngx_fc_pg_conn_socket_changed(pc)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "pg connection %p got a new socket", pc);

        ngx_fc_pg_conn_unwrap(pc);

        if (ngx_fc_pg_conn_wrap(pc) != NGX_OK) {
            ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_CONNECT);
            return;
        }

        if (status != PGRES_POLLING_OK) {
            left = pc->deadline - ngx_current_msec;
            ngx_add_timer(pc->connection->read, left > 0 ? left : 1);
        }
    }

    if (status != PGRES_POLLING_OK) {
        if (ngx_fc_pg_conn_write_event(pc, pc->want_write) != NGX_OK) {
            ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
        }

        return;
    }

    if (pc->connection->read->timer_set) {
        ngx_del_timer(pc->connection->read);
    }

    pool->nconnecting--;
    pc->state = NGX_FC_PG_CONN_RUNNING;

    if (PQsetnonblocking(pc->pgconn, 1) != 0
        || ngx_fc_pg_conn_write_event(pc, 0) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "pg connection to %V could not be made non-blocking",
                      &pool->conf->addr_text);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
        return;
    }

    pool->down = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg connection %p to %V established",
                   pc, &pool->conf->addr_text);

    q = pc->query;

    if (q == NULL) {
        ngx_fc_pg_conn_release(pc);
        return;
    }

    (void) ngx_fc_pg_conn_run(pc, q);
}


/*
 * Sends q on pc, a connection in the busy list.  Returns NGX_OK when
 * sent; NGX_DECLINED when pc, reused from the idle list, turned out to
 * be broken: pc is closed and q is left untouched for another try;
 * NGX_ERROR when pc is closed and q has been failed.
 */
static ngx_int_t
ngx_fc_pg_conn_run(ngx_fc_pg_conn_t *pc, ngx_fc_pg_query_t *q)
{
    int                     rc;
    u_char                  buf[NGX_FC_PG_ERROR_LEN];
    ngx_str_t               err;
    ngx_msec_t              timeout;
    ngx_fc_pg_main_conf_t  *conf;

    conf = pc->pool->conf;

    pc->state = NGX_FC_PG_CONN_RUNNING;
    pc->query = q;

    q->conn = pc;
    q->state = NGX_FC_PG_QUERY_ACTIVE;

    if (!PQsendQueryParams(pc->pgconn, q->sql, q->nparams, NULL, q->params,
                           NULL, NULL, 0))
    {
        goto failed;
    }

    rc = PQflush(pc->pgconn);

    if (rc == -1) {
        goto failed;
    }

    pc->flushing = (rc == 1);

    if (ngx_fc_pg_conn_write_event(pc, pc->flushing) != NGX_OK) {
        goto failed;
    }

    q->sent = 1;

    timeout = q->timeout ? q->timeout : conf->query_timeout;
    ngx_add_timer(pc->connection->read, timeout);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                   "pg query %p sent on connection %p, flushing: %d",
                   q, pc, rc);

    return NGX_OK;

failed:

    pc->query = NULL;

    q->conn = NULL;
    q->state = NGX_FC_PG_QUERY_IDLE;

    err = ngx_fc_pg_error_text(buf, PQerrorMessage(pc->pgconn));

    if (pc->reused && PQstatus(pc->pgconn) != CONNECTION_OK) {
        ngx_log_error(NGX_LOG_INFO, pc->pool->log, 0,
                      "pg idle connection to %V was broken: %V",
                      &conf->addr_text, &err);
        ngx_fc_pg_conn_close(pc);
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                  "pg query send to %V failed: %V", &conf->addr_text, &err);

    ngx_fc_pg_conn_close(pc);

    ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG, NGX_FC_ERR_IO);
    ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);

    return NGX_ERROR;
}


static void
ngx_fc_pg_conn_flush(ngx_fc_pg_conn_t *pc)
{
    int  rc;

    if (!pc->flushing) {
        (void) ngx_fc_pg_conn_write_event(pc, 0);
        return;
    }

    rc = PQflush(pc->pgconn);

    if (rc == -1) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg connection to %V broken while sending",
                      &pc->pool->conf->addr_text);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
        return;
    }

    if (rc == 0) {
        pc->flushing = 0;

        if (ngx_fc_pg_conn_write_event(pc, 0) != NGX_OK) {
            ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
        }
    }
}


static void
ngx_fc_pg_conn_read(ngx_fc_pg_conn_t *pc)
{
    u_char          buf[NGX_FC_PG_ERROR_LEN];
    PGresult       *res;
    ngx_str_t       err;
    ExecStatusType  status;

    if (!PQconsumeInput(pc->pgconn)) {
        err = ngx_fc_pg_error_text(buf, PQerrorMessage(pc->pgconn));
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg connection to %V broken: %V",
                      &pc->pool->conf->addr_text, &err);
        ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
        return;
    }

    /* libpq may need input before it can flush the rest of a query */

    if (pc->flushing) {
        ngx_fc_pg_conn_flush(pc);

        if (pc->state != NGX_FC_PG_CONN_RUNNING) {
            return;
        }
    }

    while (!PQisBusy(pc->pgconn)) {

        res = PQgetResult(pc->pgconn);

        if (res == NULL) {
            ngx_fc_pg_conn_done(pc);
            return;
        }

        status = PQresultStatus(res);

        if (status == PGRES_COPY_IN
            || status == PGRES_COPY_OUT
            || status == PGRES_COPY_BOTH)
        {
            /* libpq would hand out a copy result forever */
            PQclear(res);
            ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                          "pg query on %V started COPY, which the pool "
                          "does not support", &pc->pool->conf->addr_text);
            ngx_fc_pg_conn_fail(pc, NGX_FC_ERR_IO);
            return;
        }

        if (pc->result) {
            PQclear(pc->result);
        }

        pc->result = res;
    }
}


/* the last result of the query is in; pc is still in the busy list */
static void
ngx_fc_pg_conn_done(ngx_fc_pg_conn_t *pc)
{
    ngx_int_t               rc;
    PGresult               *res;
    ngx_uint_t              healthy;
    ngx_fc_pg_query_t      *q;
    ngx_fc_pg_main_conf_t  *conf;

    conf = pc->pool->conf;

    if (pc->connection->read->timer_set) {
        ngx_del_timer(pc->connection->read);
    }

    res = pc->result;
    pc->result = NULL;

    q = pc->query;
    pc->query = NULL;

    healthy = (PQstatus(pc->pgconn) == CONNECTION_OK);

    if (res == NULL || !healthy) {
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {

        switch (PQresultStatus(res)) {

        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
            rc = NGX_OK;
            break;

        case PGRES_FATAL_ERROR:
            rc = ngx_fc_pg_error_rc(res);
            break;

        case PGRES_EMPTY_QUERY:
            rc = NGX_DECLINED;
            break;

        default:
            rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        }
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg query on %V got no usable answer, "
                      "connection closed", &conf->addr_text);
        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG, NGX_FC_ERR_IO);

        if (res) {
            PQclear(res);
            res = NULL;
        }

        healthy = 0;

    } else if (PQtransactionStatus(pc->pgconn) != PQTRANS_IDLE) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "pg query left the connection to %V inside "
                      "a transaction, connection closed", &conf->addr_text);
        healthy = 0;
    }

    if (q) {
        ngx_http_fc_metrics_backend_latency(NGX_FC_BACKEND_PG,
                                            ngx_current_msec - q->start);
        ngx_fc_pg_query_post(q, rc, res);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->pool->log, 0,
                       "pg connection %p dropped an abandoned result", pc);

        if (res) {
            PQclear(res);
        }
    }

    if (!healthy) {
        ngx_fc_pg_conn_close(pc);
        return;
    }

    ngx_fc_pg_conn_release(pc);
}


/*
 * An error sent by the server is the caller's to read, unless it ends
 * the session (FATAL: shutdown, a terminated backend), which is no
 * answer to the query.  An error made up by libpq has no SQLSTATE.
 */
static ngx_int_t
ngx_fc_pg_error_rc(PGresult *res)
{
    const char  *severity;

    if (PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (severity
        && (ngx_strcmp(severity, "FATAL") == 0
            || ngx_strcmp(severity, "PANIC") == 0))
    {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_DECLINED;
}


/*
 * pc, healthy and in the busy list with no query, goes to the oldest
 * waiting query, else to the idle list if there is room there.
 */
static void
ngx_fc_pg_conn_release(ngx_fc_pg_conn_t *pc)
{
    ngx_queue_t            *head;
    ngx_connection_t       *c;
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_query_t      *q;
    ngx_fc_pg_main_conf_t  *conf;

    pool = pc->pool;
    conf = pool->conf;

    pc->reused = 1;

    if (!ngx_queue_empty(&pool->waiting)) {
        head = ngx_queue_head(&pool->waiting);
        q = ngx_queue_data(head, ngx_fc_pg_query_t, queue);

        ngx_queue_remove(head);
        pool->nwaiting--;

        if (q->event.timer_set) {
            ngx_del_timer(&q->event);
        }

        q->state = NGX_FC_PG_QUERY_IDLE;

        if (ngx_fc_pg_conn_run(pc, q) == NGX_DECLINED) {
            ngx_fc_pg_acquire(q);
        }

        return;
    }

    if (pool->nidle >= conf->keepalive || ngx_exiting || ngx_terminate) {
        ngx_fc_pg_conn_close(pc);
        return;
    }

    c = pc->connection;

    ngx_queue_remove(&pc->queue);
    ngx_queue_insert_head(&pool->idle, &pc->queue);
    pool->nbusy--;
    pool->nidle++;

    pc->state = NGX_FC_PG_CONN_IDLE;

    /* an idle connection must not hold up a graceful shutdown */

    c->idle = 1;
    c->read->cancelable = 1;

    ngx_add_timer(c->read, conf->idle_timeout);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg connection %p is idle", pc);
}


/* an idle connection is readable: the server closed it, or a notice */
static void
ngx_fc_pg_conn_idle_read(ngx_fc_pg_conn_t *pc)
{
    PGnotify  *notify;

    if (!PQconsumeInput(pc->pgconn) || PQstatus(pc->pgconn) != CONNECTION_OK)
    {
        ngx_log_error(NGX_LOG_INFO, pc->pool->log, 0,
                      "pg server %V closed an idle connection",
                      &pc->pool->conf->addr_text);
        ngx_fc_pg_conn_close(pc);
        return;
    }

    while ((notify = PQnotifies(pc->pgconn)) != NULL) {
        PQfreemem(notify);
    }
}


/* closes pc and fails its query, if it still has one */
static void
ngx_fc_pg_conn_fail(ngx_fc_pg_conn_t *pc, ngx_uint_t kind)
{
    ngx_fc_pg_query_t  *q;

    q = pc->query;
    pc->query = NULL;

    ngx_fc_pg_conn_close(pc);

    ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_PG, kind);

    if (q == NULL) {
        return;
    }

    if (q->sent) {
        ngx_http_fc_metrics_backend_latency(NGX_FC_BACKEND_PG,
                                            ngx_current_msec - q->start);
    }

    ngx_fc_pg_query_post(q, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
}


/* the caller has detached pc->query already */
static void
ngx_fc_pg_conn_close(ngx_fc_pg_conn_t *pc)
{
    ngx_fc_pg_pool_t  *pool;

    pool = pc->pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "pg close connection %p", pc);

    ngx_fc_pg_conn_unwrap(pc);

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pgconn) {
        PQfinish(pc->pgconn);
        pc->pgconn = NULL;
    }

    switch (pc->state) {

    case NGX_FC_PG_CONN_IDLE:
        pool->nidle--;
        break;

    case NGX_FC_PG_CONN_CONNECTING:
        pool->nconnecting--;
        pool->nbusy--;
        break;

    case NGX_FC_PG_CONN_RUNNING:
        pool->nbusy--;
        break;

    default: /* NGX_FC_PG_CONN_FREE */
        return;
    }

    ngx_queue_remove(&pc->queue);
    ngx_queue_insert_head(&pool->free, &pc->queue);

    pc->state = NGX_FC_PG_CONN_FREE;
    pc->query = NULL;
}


static void
ngx_fc_pg_pool_down(ngx_fc_pg_pool_t *pool)
{
    pool->down = 1;
    pool->retry_at = ngx_current_msec + NGX_FC_PG_RETRY_DELAY;
}


/*
 * Hands freed slots to waiting queries.  A query waits only while every
 * slot is busy, so it gets a new connection here; while the server is
 * down that fails it at once instead of after its queue timeout.
 */
static void
ngx_fc_pg_pool_dispatch(ngx_fc_pg_pool_t *pool)
{
    ngx_queue_t        *head;
    ngx_fc_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiting)
           && pool->nbusy + pool->nidle < pool->conf->pool_size)
    {
        head = ngx_queue_head(&pool->waiting);
        q = ngx_queue_data(head, ngx_fc_pg_query_t, queue);

        ngx_queue_remove(head);
        pool->nwaiting--;

        if (q->event.timer_set) {
            ngx_del_timer(&q->event);
        }

        q->state = NGX_FC_PG_QUERY_IDLE;

        ngx_fc_pg_acquire(q);
    }
}


static void
ngx_fc_pg_pool_report(ngx_fc_pg_pool_t *pool)
{
    if (pool->reported[0] == pool->nbusy
        && pool->reported[1] == pool->nidle
        && pool->reported[2] == pool->nwaiting)
    {
        return;
    }

    pool->reported[0] = pool->nbusy;
    pool->reported[1] = pool->nidle;
    pool->reported[2] = pool->nwaiting;

    ngx_http_fc_metrics_pool(NGX_FC_BACKEND_PG, pool->nbusy, pool->nidle,
                             pool->nwaiting);
}


/* a libpq message on one line, cut to fit buf */
static ngx_str_t
ngx_fc_pg_error_text(u_char *buf, const char *msg)
{
    u_char     *p, *last;
    ngx_str_t   text;

    p = buf;
    last = buf + NGX_FC_PG_ERROR_LEN;

    for ( /* void */ ; *msg && p < last; msg++) {

        if (*msg == '\n' || *msg == '\t' || *msg == ' ') {
            if (p > buf && p[-1] != ' ') {
                *p++ = ' ';
            }

            continue;
        }

        *p++ = (u_char) *msg;
    }

    if (p > buf && p[-1] == ' ') {
        p--;
    }

    text.data = buf;
    text.len = p - buf;

    return text;
}


/*
 * Notices may quote data (RAISE NOTICE), so they go to the debug log
 * only; libpq would print them on stderr otherwise.
 */
static void
ngx_fc_pg_notice(void *arg, const char *message)
{
#if (NGX_DEBUG)
    ngx_log_t  *log = arg;

    u_char     buf[NGX_FC_PG_ERROR_LEN];
    ngx_str_t  text;

    text = ngx_fc_pg_error_text(buf, message);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0, "pg notice: %V", &text);
#endif
}


static void *
ngx_fc_pg_create_main_conf(ngx_conf_t *cf)
{
    ngx_fc_pg_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_fc_pg_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pmcf->host = { 0, NULL };
     *     pmcf->password = { 0, NULL };
     *     pmcf->keywords = { NULL, ... };
     *     pmcf->pool = NULL;
     */

    pmcf->port = NGX_CONF_UNSET_UINT;
    pmcf->pool_size = NGX_CONF_UNSET_UINT;
    pmcf->keepalive = NGX_CONF_UNSET_UINT;
    pmcf->idle_timeout = NGX_CONF_UNSET_MSEC;
    pmcf->queue_size = NGX_CONF_UNSET_UINT;
    pmcf->queue_timeout = NGX_CONF_UNSET_MSEC;
    pmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    pmcf->query_timeout = NGX_CONF_UNSET_MSEC;

    return pmcf;
}


static char *
ngx_fc_pg_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_fc_pg_main_conf_t  *pmcf = conf;

    ngx_conf_init_uint_value(pmcf->pool_size, 16);

    if (pmcf->keepalive == NGX_CONF_UNSET_UINT) {
        /* closing a connection that the next burst reopens costs a
           backend start and a password exchange: keep them all */
        pmcf->keepalive = pmcf->pool_size;

    } else if (pmcf->keepalive > pmcf->pool_size) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fc_pg_keepalive\" %ui exceeds "
                      "\"fc_pg_pool_size\" %ui",
                      pmcf->keepalive, pmcf->pool_size);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(pmcf->idle_timeout, 60000);
    ngx_conf_init_uint_value(pmcf->queue_size, 256);
    ngx_conf_init_msec_value(pmcf->queue_timeout, 2000);
    ngx_conf_init_msec_value(pmcf->connect_timeout, 2000);
    ngx_conf_init_msec_value(pmcf->query_timeout, 5000);

    return NGX_CONF_OK;
}


/*
 * fc_pg_server host=127.0.0.1 port=5432 dbname=fc user=fc
 *              password_file=/etc/fc/pg.password [application_name=...]
 *              [sslmode=disable];
 */
static char *
ngx_fc_pg_server(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fc_pg_main_conf_t  *pmcf = conf;

    char        *rv;
    u_char      *eq, *p;
    ngx_str_t   *value, key, val, *field, password_file;
    ngx_int_t    port;
    ngx_uint_t   i, n;

    if (pmcf->host.data) {
        return "is duplicate";
    }

    ngx_str_null(&password_file);

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (eq == NULL || eq == value[i].data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\", "
                               "expected key=value", &value[i]);
            return NGX_CONF_ERROR;
        }

        key.data = value[i].data;
        key.len = eq - key.data;
        val.data = eq + 1;
        val.len = value[i].data + value[i].len - val.data;

        if (key.len == 4 && ngx_strncmp(key.data, "host", 4) == 0) {
            field = &pmcf->host;

        } else if (key.len == 4 && ngx_strncmp(key.data, "port", 4) == 0) {
            if (pmcf->port != NGX_CONF_UNSET_UINT) {
                goto duplicate;
            }

            port = ngx_atoi(val.data, val.len);

            if (port < 1 || port > 65535) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid port \"%V\", "
                                   "expected 1-65535", &val);
                return NGX_CONF_ERROR;
            }

            pmcf->port = port;
            continue;

        } else if (key.len == 6 && ngx_strncmp(key.data, "dbname", 6) == 0) {
            field = &pmcf->dbname;

        } else if (key.len == 4 && ngx_strncmp(key.data, "user", 4) == 0) {
            field = &pmcf->user;

        } else if (key.len == 13
                   && ngx_strncmp(key.data, "password_file", 13) == 0)
        {
            field = &password_file;

        } else if (key.len == 16
                   && ngx_strncmp(key.data, "application_name", 16) == 0)
        {
            field = &pmcf->application_name;

        } else if (key.len == 7 && ngx_strncmp(key.data, "sslmode", 7) == 0) {
            field = &pmcf->sslmode;

        } else if (key.len == 8 && ngx_strncmp(key.data, "password", 8) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "a password must not be written in the "
                               "configuration, use \"password_file=\"");
            return NGX_CONF_ERROR;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown key \"%V\"", &key);
            return NGX_CONF_ERROR;
        }

        if (field->data) {
            goto duplicate;
        }

        if (val.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty value of \"%V\"", &key);
            return NGX_CONF_ERROR;
        }

        *field = val;
    }

    if (pmcf->host.data == NULL || pmcf->dbname.data == NULL
        || pmcf->user.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"host=\", \"dbname=\" and \"user=\" "
                           "are required");
        return NGX_CONF_ERROR;
    }

    if (pmcf->port == NGX_CONF_UNSET_UINT) {
        pmcf->port = 5432;
    }

    if (pmcf->sslmode.data == NULL) {
        ngx_str_set(&pmcf->sslmode, "disable");

    } else if (ngx_strcmp(pmcf->sslmode.data, "disable") != 0
               && ngx_strcmp(pmcf->sslmode.data, "allow") != 0
               && ngx_strcmp(pmcf->sslmode.data, "prefer") != 0
               && ngx_strcmp(pmcf->sslmode.data, "require") != 0
               && ngx_strcmp(pmcf->sslmode.data, "verify-ca") != 0
               && ngx_strcmp(pmcf->sslmode.data, "verify-full") != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid sslmode \"%V\"", &pmcf->sslmode);
        return NGX_CONF_ERROR;
    }

    rv = ngx_fc_pg_server_host(cf, pmcf, &pmcf->host);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (password_file.data) {
        rv = ngx_fc_pg_read_password(cf, pmcf, &password_file);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    /* the values are the configuration's words, which end in '\0' */

    n = 0;

    pmcf->keywords[n] = (pmcf->host.data[0] == '/') ? "host" : "hostaddr";
    pmcf->values[n++] = (const char *) pmcf->host.data;

    p = ngx_pnalloc(cf->pool, NGX_INT_T_LEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_sprintf(p, "%ui", pmcf->port) = '\0';

    pmcf->keywords[n] = "port";
    pmcf->values[n++] = (const char *) p;

    pmcf->keywords[n] = "dbname";
    pmcf->values[n++] = (const char *) pmcf->dbname.data;

    pmcf->keywords[n] = "user";
    pmcf->values[n++] = (const char *) pmcf->user.data;

    if (pmcf->password.data) {
        pmcf->keywords[n] = "password";
        pmcf->values[n++] = (const char *) pmcf->password.data;
    }

    if (pmcf->application_name.data) {
        pmcf->keywords[n] = "application_name";
        pmcf->values[n++] = (const char *) pmcf->application_name.data;
    }

    pmcf->keywords[n] = "sslmode";
    pmcf->values[n++] = (const char *) pmcf->sslmode.data;

    /* GSSAPI negotiation would cost a round trip for nothing */

    pmcf->keywords[n] = "gssencmode";
    pmcf->values[n++] = "disable";

    pmcf->keywords[n] = "client_encoding";
    pmcf->values[n++] = "UTF8";

    pmcf->keywords[n] = NULL;
    pmcf->values[n] = NULL;

    return NGX_CONF_OK;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate key \"%V\"", &key);
    return NGX_CONF_ERROR;
}


/* only numeric addresses or a socket directory: libpq must not resolve */
static char *
ngx_fc_pg_server_host(ngx_conf_t *cf, ngx_fc_pg_main_conf_t *pmcf,
    ngx_str_t *value)
{
    size_t   len;
    u_char  *p;
#if (NGX_HAVE_INET6)
    u_char   addr6[16];
#endif

    len = value->len + sizeof("unix:/.s.PGSQL.") - 1 + NGX_INT_T_LEN + 2;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    pmcf->addr_text.data = p;

    if (value->data[0] == '/') {
        p = ngx_sprintf(p, "unix:%V/.s.PGSQL.%ui", value, pmcf->port);

    } else if (ngx_inet_addr(value->data, value->len) != INADDR_NONE) {
        p = ngx_sprintf(p, "%V:%ui", value, pmcf->port);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(value->data, value->len, addr6) == NGX_OK) {
        p = ngx_sprintf(p, "[%V]:%ui", value, pmcf->port);
#endif

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "host \"%V\" is neither a numeric address nor "
                           "an absolute socket directory; host names are "
                           "not resolved", value);
        return NGX_CONF_ERROR;
    }

    pmcf->addr_text.len = p - pmcf->addr_text.data;

    return NGX_CONF_OK;
}


static char *
ngx_fc_pg_read_password(ngx_conf_t *cf, ngx_fc_pg_main_conf_t *pmcf,
    ngx_str_t *path)
{
    char                *rv;
    u_char              *buf;
    size_t               len;
    ssize_t              n;
    ngx_str_t            name;
    ngx_file_t           file;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    name = *path;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%s\" failed", name.data);
        goto done;
    }

    len = (size_t) ngx_file_size(&fi);

    if (len > NGX_FC_PG_PASSWORD_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password file \"%s\" is longer than %d bytes",
                           name.data, NGX_FC_PG_PASSWORD_MAX);
        goto done;
    }

    buf = ngx_pnalloc(cf->pool, len + 1);
    if (buf == NULL) {
        goto done;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        goto done;
    }

    /* len covers the whole buffer, for ngx_fc_pg_forget_password() */

    pmcf->password.data = buf;
    pmcf->password.len = len + 1;

    cln->handler = ngx_fc_pg_forget_password;
    cln->data = &pmcf->password;

    n = ngx_read_file(&file, buf, len, 0);

    if (n == NGX_ERROR) {
        goto done;
    }

    if ((size_t) n != len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           ngx_read_file_n " \"%s\" returned only %z bytes",
                           name.data, n);
        goto done;
    }

    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        len--;
    }

    if (len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password file \"%s\" is empty", name.data);
        goto done;
    }

    if (ngx_strlchr(buf, buf + len, '\0') != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password file \"%s\" contains a zero byte",
                           name.data);
        goto done;
    }

    buf[len] = '\0';

    rv = NGX_CONF_OK;

done:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", name.data);
    }

    return rv;
}


/* the configuration's copy of the password does not outlive it */
static void
ngx_fc_pg_forget_password(void *data)
{
    ngx_str_t  *password = data;

    if (password->data) {
        ngx_explicit_memzero(password->data, password->len);
    }
}


static char *
ngx_fc_pg_check_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *msp = data;

    if (*msp == 0) {
        return "must be greater than zero";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_fc_pg_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_conn_t       *pc;
    ngx_fc_pg_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_fc_pg_module);

    if (pmcf == NULL || pmcf->host.data == NULL) {
        return NGX_OK;
    }

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_fc_pg_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    pool->conns = ngx_pcalloc(cycle->pool,
                              pmcf->pool_size * sizeof(ngx_fc_pg_conn_t));
    if (pool->conns == NULL) {
        return NGX_ERROR;
    }

    pool->conf = pmcf;
    pool->log = cycle->log;

    ngx_queue_init(&pool->free);
    ngx_queue_init(&pool->busy);
    ngx_queue_init(&pool->idle);
    ngx_queue_init(&pool->waiting);

    for (i = 0; i < pmcf->pool_size; i++) {
        pc = &pool->conns[i];
        pc->pool = pool;
        pc->state = NGX_FC_PG_CONN_FREE;
        ngx_queue_insert_tail(&pool->free, &pc->queue);
    }

    pmcf->pool = pool;

    return NGX_OK;
}


static void
ngx_fc_pg_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_fc_pg_pool_t       *pool;
    ngx_fc_pg_conn_t       *pc;
    ngx_fc_pg_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_fc_pg_module);

    if (pmcf == NULL || pmcf->pool == NULL) {
        return;
    }

    pool = pmcf->pool;

    for (i = 0; i < pmcf->pool_size; i++) {
        pc = &pool->conns[i];

        if (pc->state != NGX_FC_PG_CONN_FREE) {
            pc->query = NULL;
            ngx_fc_pg_conn_close(pc);
        }
    }

    ngx_http_fc_metrics_pool(NGX_FC_BACKEND_PG, 0, 0, 0);

    pmcf->pool = NULL;
}

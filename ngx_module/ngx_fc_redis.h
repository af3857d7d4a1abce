
/*
 * ngx_http_fc_redis_module: a non-blocking Redis connection pool, one
 * per worker process, driven by nginx events.
 *
 * A caller fills an ngx_fc_redis_cmd_t allocated zeroed from r->pool
 * and passes it to ngx_fc_redis_send().  The command is encoded at
 * once, so argv need not outlive the call.  It runs on an idle
 * connection, on a new one while the worker has fewer than
 * fc_redis_pool_size, or waits in a queue for one.  Its handler is
 * called exactly once, always later from an event, with rc and reply
 * set:
 *
 *   NGX_OK                        reply holds the answer; it may be a
 *                                 REDIS_REPLY_ERROR (a Lua error, a
 *                                 wrong type) for the caller to judge
 *   NGX_HTTP_SERVICE_UNAVAILABLE  no answer: connect failed, timeout,
 *                                 broken connection, queue full or
 *                                 waited too long; reply is NULL
 *
 * With a script, the command is EVALSHA sha numkeys argv...; when Redis
 * has lost the script (restart, SCRIPT FLUSH) it is sent again as EVAL
 * with the body on the same connection, and the caller sees only that
 * second reply.
 *
 * The pool never touches r->main->count and never finalizes the
 * request.  If the request is freed before the reply, the command is
 * abandoned: its handler is not called, and a command already sent
 * runs to completion on its connection, whose reply is then dropped.
 */

#ifndef _NGX_FC_REDIS_H_INCLUDED_
#define _NGX_FC_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>


typedef struct ngx_fc_redis_cmd_s           ngx_fc_redis_cmd_t;
typedef struct ngx_fc_redis_script_s        ngx_fc_redis_script_t;
typedef struct ngx_http_fc_redis_conn_s     ngx_http_fc_redis_conn_t;
typedef struct ngx_http_fc_redis_cleanup_s  ngx_http_fc_redis_cleanup_t;

typedef void (*ngx_fc_redis_handler_pt)(ngx_fc_redis_cmd_t *cmd);


struct ngx_fc_redis_cmd_s {
    /* set by the caller; cmd is allocated from r->pool */
    ngx_http_request_t             *request;
    ngx_fc_redis_script_t          *script;    /* NULL: plain command in
                                                  argv; else EVALSHA sha
                                                  numkeys argv */
    int                             numkeys;   /* with a script */
    int                             argc;
    const char                    **argv;
    size_t                         *argvlen;   /* NULL: strlen(argv[i]) */
    ngx_msec_t                      timeout;   /* 0: fc_redis_timeout */
    ngx_fc_redis_handler_pt         handler;
    void                           *data;

    /* set by the pool before handler is called */
    ngx_int_t                       rc;
    redisReply                     *reply;     /* freeReplyObject'ed by a
                                                  cleanup of r->pool; may
                                                  be NULL */

    /* private to the pool */
    ngx_http_fc_redis_conn_t       *conn;
    ngx_http_fc_redis_cleanup_t    *cleanup;
    ngx_queue_t                     queue;     /* in the wait queue */
    ngx_event_t                     event;     /* queue timer, completion */
    char                           *out;       /* encoded, not yet sent */
    size_t                          out_len;
    const char                    **eval_argv; /* a script's EVALSHA, kept
                                                  to resend it as EVAL */
    size_t                         *eval_argvlen;
    ngx_uint_t                      state;
    unsigned                        eval:1;
};


/*
 * Returns the script configured with "fc_redis_script name path", or
 * NULL if there is none.  May be called at configuration time, once the
 * http block has been parsed, and at run time.
 */
ngx_fc_redis_script_t *ngx_fc_redis_script_find(ngx_cycle_t *cycle,
    const char *name);

/*
 * Accepts cmd for execution.  Returns NGX_OK, after which cmd->handler
 * is called exactly once from a later event unless the request is freed
 * first, or NGX_ERROR when memory could not be allocated or cmd is
 * malformed (the handler is then never called).  cmd may be sent again
 * from its handler; each reply stays valid until r->pool is destroyed.
 */
ngx_int_t ngx_fc_redis_send(ngx_fc_redis_cmd_t *cmd);


extern ngx_module_t  ngx_http_fc_redis_module;


#endif /* _NGX_FC_REDIS_H_INCLUDED_ */


/*
 * ngx_http_fc_redis_module: the per-worker Redis pool behind
 * ngx_fc_redis_send().
 *
 * nginx owns every socket: connections are opened with
 * ngx_event_connect_peer(), read and written from nginx events and
 * closed once, by ngx_close_connection().  hiredis is used only as a
 * codec: redisFormatCommandArgv() encodes a command and a redisReader
 * per connection decodes the replies.
 *
 * A connection carries one command at a time.  Replies therefore need
 * no matching, and a timeout or a broken connection fails exactly one
 * command; the price is one round trip per command per connection,
 * which fc_redis_pool_size connections per worker amortise.  When every
 * connection is busy, commands wait in a FIFO queue of at most
 * fc_redis_queue_size for at most fc_redis_queue_timeout; a connection
 * that finishes a command takes the head of the queue before it may
 * become idle, so a command never waits while a connection is idle.
 *
 * A new connection authenticates and selects its database first: AUTH
 * and SELECT are pipelined together, and the waiting command is written
 * only after both answered +OK.  Pipelining the command as well would
 * save a round trip, but after a failed SELECT it would run against the
 * wrong database.
 *
 * Handlers are never called from inside ngx_fc_redis_send() nor from
 * the middle of socket I/O: a finished command posts its own event, and
 * the handler runs from ngx_posted_events, when the pool is consistent
 * again and the handler may send more commands or end its request.
 *
 * A request freed early abandons its command through a cleanup of
 * r->pool: a waiting command leaves the queue; a command already on a
 * connection is detached from it, its encoded bytes belong to the
 * connection by then, and its late reply is read and dropped, so the
 * connection stays in step and is reused.
 *
 * Not done: a command is never retried, not even when a kept-alive
 * connection turns out to have been closed by Redis (a retry could
 * apply a non-idempotent command twice); AUTH takes a password only,
 * not an ACL user name; there is no TLS.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_fc_module.h"
#include "ngx_fc_redis.h"


#define NGX_HTTP_FC_REDIS_PORT           6379
#define NGX_HTTP_FC_REDIS_RECV_SIZE      16384    /* bytes per recv() */
#define NGX_HTTP_FC_REDIS_FILE_MAX       1048576  /* bytes, script or
                                                     password file */
#define NGX_HTTP_FC_REDIS_ERRLOG_MAX     128      /* bytes of a Redis error
                                                     quoted in the log */

#define NGX_HTTP_FC_REDIS_CONNECTING     0
#define NGX_HTTP_FC_REDIS_HANDSHAKE      1
#define NGX_HTTP_FC_REDIS_IDLE           2
#define NGX_HTTP_FC_REDIS_BUSY           3

#define NGX_HTTP_FC_REDIS_CMD_NEW        0
#define NGX_HTTP_FC_REDIS_CMD_WAITING    1
#define NGX_HTTP_FC_REDIS_CMD_BOUND      2    /* its connection is opening */
#define NGX_HTTP_FC_REDIS_CMD_SENT       3
#define NGX_HTTP_FC_REDIS_CMD_DONE       4    /* handler call is posted */
#define NGX_HTTP_FC_REDIS_CMD_FINISHED   5


struct ngx_fc_redis_script_s {
    ngx_str_t                       name;
    ngx_str_t                       body;
    u_char                          sha1[40];  /* lowercase hex */
};


typedef struct {
    ngx_addr_t                      addr;      /* sockaddr NULL: none */
    ngx_str_t                       password;
    ngx_int_t                       db;
    ngx_int_t                       pool_size;
    ngx_int_t                       keepalive;
    ngx_int_t                       queue_size;
    ngx_msec_t                      queue_timeout;
    ngx_msec_t                      connect_timeout;
    ngx_msec_t                      timeout;
    ngx_array_t                     scripts;   /* ngx_fc_redis_script_t */
    ngx_str_t                       handshake; /* AUTH, SELECT encoded */
    ngx_uint_t                      handshake_replies;
} ngx_http_fc_redis_main_conf_t;


typedef struct {
    ngx_http_fc_redis_main_conf_t  *conf;
    ngx_log_t                      *log;       /* the worker's log */
    ngx_log_t                       conn_log;  /* names redis in nginx's
                                                  own socket errors */
    ngx_queue_t                     idle;      /* most recently used first */
    ngx_queue_t                     busy;      /* opening ones included */
    ngx_queue_t                     waiting;   /* ngx_fc_redis_cmd_t */
    ngx_uint_t                      nconns;    /* idle ones included */
    ngx_uint_t                      nidle;
    ngx_uint_t                      nwaiting;
    u_char                         *buf;       /* RECV_SIZE bytes */
} ngx_http_fc_redis_pool_t;


struct ngx_http_fc_redis_conn_s {
    ngx_queue_t                     queue;     /* in idle or busy */
    ngx_http_fc_redis_pool_t       *pool;
    ngx_connection_t               *connection;
    redisReader                    *reader;
    ngx_fc_redis_cmd_t             *cmd;       /* NULL: none or abandoned */
    char                           *out;       /* free()d once sent */
    u_char                         *out_pos;
    u_char                         *out_last;
    ngx_msec_t                      start;     /* the command written */
    ngx_uint_t                      replies;   /* still expected */
    ngx_uint_t                      state;
};


/* one per send, so that a reply outlives a resend of its command */
struct ngx_http_fc_redis_cleanup_s {
    ngx_fc_redis_cmd_t             *cmd;       /* NULL: sent again since */
    redisReply                     *reply;
};


static void *ngx_http_fc_redis_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_fc_redis_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_fc_redis_server(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_fc_redis_password_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_fc_redis_script(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_fc_redis_read_file(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *content);
static char *ngx_http_fc_redis_check_positive(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_fc_redis_check_msec(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_http_fc_redis_init_process(ngx_cycle_t *cycle);
static void ngx_http_fc_redis_exit_process(ngx_cycle_t *cycle);

static ngx_int_t ngx_http_fc_redis_encode(ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_redis_dispatch(ngx_http_fc_redis_pool_t *pool);
static void ngx_http_fc_redis_dequeue(ngx_http_fc_redis_pool_t *pool,
    ngx_fc_redis_cmd_t *cmd);
static ngx_int_t ngx_http_fc_redis_connect(ngx_http_fc_redis_pool_t *pool,
    ngx_fc_redis_cmd_t *cmd);
static ngx_int_t ngx_http_fc_redis_connected(ngx_http_fc_redis_conn_t *conn);
static ngx_int_t ngx_http_fc_redis_run(ngx_http_fc_redis_conn_t *conn,
    ngx_fc_redis_cmd_t *cmd);
static ngx_int_t ngx_http_fc_redis_release(ngx_http_fc_redis_conn_t *conn);
static ngx_int_t ngx_http_fc_redis_write(ngx_http_fc_redis_conn_t *conn);
static void ngx_http_fc_redis_write_handler(ngx_event_t *wev);
static void ngx_http_fc_redis_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_fc_redis_read(ngx_http_fc_redis_conn_t *conn);
static ngx_int_t ngx_http_fc_redis_process(ngx_http_fc_redis_conn_t *conn,
    redisReply *reply);
static ngx_int_t ngx_http_fc_redis_eval(ngx_http_fc_redis_conn_t *conn,
    ngx_fc_redis_cmd_t *cmd);
static void ngx_http_fc_redis_timeout(ngx_http_fc_redis_conn_t *conn);
static void ngx_http_fc_redis_fail(ngx_http_fc_redis_conn_t *conn,
    ngx_uint_t kind);
static void ngx_http_fc_redis_close(ngx_http_fc_redis_conn_t *conn);
static void ngx_http_fc_redis_complete(ngx_fc_redis_cmd_t *cmd,
    ngx_int_t status, redisReply *reply);
static void ngx_http_fc_redis_cmd_handler(ngx_event_t *ev);
static void ngx_http_fc_redis_cleanup(void *data);
static void ngx_http_fc_redis_report(ngx_http_fc_redis_pool_t *pool);
static u_char *ngx_http_fc_redis_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


/* negative numbers are already refused by ngx_conf_set_num_slot() */
static ngx_conf_post_t  ngx_http_fc_redis_positive_post = {
    ngx_http_fc_redis_check_positive
};

static ngx_conf_post_t  ngx_http_fc_redis_msec_post = {
    ngx_http_fc_redis_check_msec
};


static ngx_command_t  ngx_http_fc_redis_commands[] = {

    { ngx_string("fc_redis_server"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_fc_redis_server,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_redis_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_fc_redis_password_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fc_redis_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, db),
      NULL },

    { ngx_string("fc_redis_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, pool_size),
      &ngx_http_fc_redis_positive_post },

    { ngx_string("fc_redis_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, keepalive),
      NULL },

    { ngx_string("fc_redis_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, queue_size),
      NULL },

    { ngx_string("fc_redis_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, queue_timeout),
      &ngx_http_fc_redis_msec_post },

    { ngx_string("fc_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, connect_timeout),
      &ngx_http_fc_redis_msec_post },

    { ngx_string("fc_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_fc_redis_main_conf_t, timeout),
      &ngx_http_fc_redis_msec_post },

    { ngx_string("fc_redis_script"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_fc_redis_script,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_fc_redis_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_fc_redis_create_main_conf,    /* create main configuration */
    ngx_http_fc_redis_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_fc_redis_module = {
    NGX_MODULE_V1,
    &ngx_http_fc_redis_module_ctx,         /* module context */
    ngx_http_fc_redis_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_fc_redis_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_fc_redis_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* this worker's pool; NULL without fc_redis_server and outside workers */
static ngx_http_fc_redis_pool_t  *ngx_http_fc_redis_pool;


static void *
ngx_http_fc_redis_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_fc_redis_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_fc_redis_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rmcf->addr = { NULL, 0, { 0, NULL } };
     *     rmcf->password = { 0, NULL };
     *     rmcf->handshake = { 0, NULL };
     *     rmcf->handshake_replies = 0;
     */

    rmcf->db = NGX_CONF_UNSET;
    rmcf->pool_size = NGX_CONF_UNSET;
    rmcf->keepalive = NGX_CONF_UNSET;
    rmcf->queue_size = NGX_CONF_UNSET;
    rmcf->queue_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->timeout = NGX_CONF_UNSET_MSEC;

    if (ngx_array_init(&rmcf->scripts, cf->pool, 4,
                       sizeof(ngx_fc_redis_script_t))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


/*
 * Fills in defaults and encodes AUTH and SELECT once, so that a new
 * connection only copies them out; the plain password is wiped after.
 */
static char *
ngx_http_fc_redis_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_fc_redis_main_conf_t *rmcf = conf;

    int          auth_len, select_len;
    char        *auth, *select;
    u_char      *p, db[NGX_INT_T_LEN];
    size_t       argvlen[2];
    const char  *argv[2];

    ngx_conf_init_value(rmcf->db, 0);
    ngx_conf_init_value(rmcf->pool_size, 8);
    ngx_conf_init_value(rmcf->queue_size, 256);
    ngx_conf_init_msec_value(rmcf->queue_timeout, 1000);
    ngx_conf_init_msec_value(rmcf->connect_timeout, 1000);
    ngx_conf_init_msec_value(rmcf->timeout, 1000);

    if (rmcf->keepalive == NGX_CONF_UNSET) {
        rmcf->keepalive = rmcf->pool_size;

    } else if (rmcf->keepalive > rmcf->pool_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fc_redis_keepalive %i is larger than "
                           "fc_redis_pool_size %i",
                           rmcf->keepalive, rmcf->pool_size);
        return NGX_CONF_ERROR;
    }

    auth = NULL;
    auth_len = 0;
    select = NULL;
    select_len = 0;

    if (rmcf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) rmcf->password.data;
        argvlen[1] = rmcf->password.len;

        auth_len = redisFormatCommandArgv(&auth, 2, argv, argvlen);

        ngx_explicit_memzero(rmcf->password.data, rmcf->password.len);

        if (auth_len < 0) {
            return NGX_CONF_ERROR;
        }

        rmcf->handshake_replies++;
    }

    if (rmcf->db) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", rmcf->db) - db;

        select_len = redisFormatCommandArgv(&select, 2, argv, argvlen);

        if (select_len < 0) {
            goto failed;
        }

        rmcf->handshake_replies++;
    }

    if (rmcf->handshake_replies) {
        rmcf->handshake.len = auth_len + select_len;
        rmcf->handshake.data = ngx_pnalloc(cf->pool, rmcf->handshake.len);
        if (rmcf->handshake.data == NULL) {
            goto failed;
        }

        p = ngx_cpymem(rmcf->handshake.data, auth, auth_len);
        ngx_memcpy(p, select, select_len);
    }

    if (auth) {
        ngx_explicit_memzero(auth, auth_len);
        free(auth);
    }

    if (select) {
        free(select);
    }

    return NGX_CONF_OK;

failed:

    if (auth) {
        ngx_explicit_memzero(auth, auth_len);
        free(auth);
    }

    if (select) {
        free(select);
    }

    return NGX_CONF_ERROR;
}


/* "127.0.0.1:6379", "[::1]:6379" or "unix:/path"; never a host name */
static char *
ngx_http_fc_redis_server(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fc_redis_main_conf_t *rmcf = conf;

    u_char     *p;
    ngx_str_t  *value;
    ngx_url_t   u;

    if (rmcf->addr.sockaddr) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len >= 5
        && ngx_strncasecmp(value[1].data, (u_char *) "unix:", 5) == 0)
    {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[1];
        u.no_resolve = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in fc_redis_server \"%V\"",
                               u.err ? u.err : "invalid address", &value[1]);
            return NGX_CONF_ERROR;
        }

        rmcf->addr = u.addrs[0];

    } else {
        if (ngx_parse_addr_port(cf->pool, &rmcf->addr, value[1].data,
                                value[1].len)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid fc_redis_server \"%V\": expected a "
                               "numeric address with a port, such as "
                               "127.0.0.1:6379 or [::1]:6379, "
                               "or unix:/path", &value[1]);
            rmcf->addr.sockaddr = NULL;
            return NGX_CONF_ERROR;
        }

        if (ngx_inet_get_port(rmcf->addr.sockaddr) == 0) {
            ngx_inet_set_port(rmcf->addr.sockaddr, NGX_HTTP_FC_REDIS_PORT);
        }
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rmcf->addr.name.data = p;
    rmcf->addr.name.len = ngx_sock_ntop(rmcf->addr.sockaddr,
                                        rmcf->addr.socklen, p,
                                        NGX_SOCKADDR_STRLEN, 1);

    return NGX_CONF_OK;
}


/* the file holds the password on one line; it is never logged */
static char *
ngx_http_fc_redis_password_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_fc_redis_main_conf_t *rmcf = conf;

    ngx_str_t  *value, password;

    if (rmcf->password.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_fc_redis_read_file(cf, &value[1], &password) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    while (password.len
           && (password.data[password.len - 1] == LF
               || password.data[password.len - 1] == CR
               || password.data[password.len - 1] == ' '
               || password.data[password.len - 1] == '\t'))
    {
        password.len--;
    }

    if (password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis password file \"%V\" is empty", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_strlchr(password.data, password.data + password.len, LF)
        || ngx_strlchr(password.data, password.data + password.len, CR))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis password file \"%V\" has more than "
                           "one line", &value[1]);
        return NGX_CONF_ERROR;
    }

    rmcf->password = password;

    return NGX_CONF_OK;
}


static char *
ngx_http_fc_redis_script(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_fc_redis_main_conf_t *rmcf = conf;

    u_char                  md[EVP_MAX_MD_SIZE];
    ngx_str_t              *value;
    ngx_uint_t              i;
    unsigned int            mdlen;
    ngx_fc_redis_script_t  *script;

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty fc_redis_script name");
        return NGX_CONF_ERROR;
    }

    script = rmcf->scripts.elts;

    for (i = 0; i < rmcf->scripts.nelts; i++) {
        if (script[i].name.len == value[1].len
            && ngx_strncmp(script[i].name.data, value[1].data,
                           value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate fc_redis_script \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    script = ngx_array_push(&rmcf->scripts);
    if (script == NULL) {
        return NGX_CONF_ERROR;
    }

    script->name = value[1];

    if (ngx_http_fc_redis_read_file(cf, &value[2], &script->body) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (script->body.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis script file \"%V\" is empty", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (EVP_Digest(script->body.data, script->body.len, md, &mdlen,
                   EVP_sha1(), NULL)
        != 1 || mdlen != 20)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "SHA1 of redis script \"%V\" failed", &value[2]);
        return NGX_CONF_ERROR;
    }

    ngx_hex_dump(script->sha1, md, 20);

    return NGX_CONF_OK;
}


/*
 * Reads a whole file named relative to the configuration prefix into
 * cf->pool.  Logs and returns NGX_ERROR if it cannot be read or is
 * larger than NGX_HTTP_FC_REDIS_FILE_MAX.
 */
static ngx_int_t
ngx_http_fc_redis_read_file(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *content)
{
    off_t            size;
    ssize_t          n;
    ngx_int_t        conn;
    ngx_file_t       file;
    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name->data);
        return NGX_ERROR;
    }

    conn = NGX_ERROR;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%s\" failed", name->data);
        goto done;
    }

    size = ngx_file_size(&fi);

    if (size > NGX_HTTP_FC_REDIS_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" is too large: %O bytes, at most %d",
                           name->data, size, NGX_HTTP_FC_REDIS_FILE_MAX);
        goto done;
    }

    content->len = (size_t) size;
    content->data = ngx_pnalloc(cf->pool, content->len + 1);
    if (content->data == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, content->data, content->len, 0);

    if (n == NGX_ERROR) {
        goto done;
    }

    if ((size_t) n != content->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           ngx_read_file_n " \"%s\" returned only "
                           "%z bytes instead of %O", name->data, n, size);
        goto done;
    }

    content->data[content->len] = '\0';

    conn = NGX_OK;

done:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", name->data);
    }

    return conn;
}


static char *
ngx_http_fc_redis_check_positive(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    if (*np < 1) {
        return "must be at least 1";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_fc_redis_check_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *msp = data;

    if (*msp == 0) {
        return "must be more than 0";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_fc_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_http_fc_redis_pool_t       *pool;
    ngx_http_fc_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_fc_redis_module);

    if (rmcf == NULL || rmcf->addr.sockaddr == NULL) {
        return NGX_OK;
    }

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_fc_redis_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    pool->buf = ngx_palloc(cycle->pool, NGX_HTTP_FC_REDIS_RECV_SIZE);
    if (pool->buf == NULL) {
        return NGX_ERROR;
    }

    pool->conf = rmcf;
    pool->log = cycle->log;

    pool->conn_log = *cycle->log;
    pool->conn_log.handler = ngx_http_fc_redis_log_error;
    pool->conn_log.data = pool;

    ngx_queue_init(&pool->idle);
    ngx_queue_init(&pool->busy);
    ngx_queue_init(&pool->waiting);

    ngx_http_fc_redis_pool = pool;

    ngx_http_fc_redis_report(pool);

    return NGX_OK;
}


/*
 * The worker is exiting: close every connection.  Commands still
 * pending are only marked finished; their requests go away with the
 * process and no handler is called.
 */
static void
ngx_http_fc_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t               *q;
    ngx_fc_redis_cmd_t        *cmd;
    ngx_http_fc_redis_conn_t  *conn;
    ngx_http_fc_redis_pool_t  *pool;

    pool = ngx_http_fc_redis_pool;

    if (pool == NULL) {
        return;
    }

    while (!ngx_queue_empty(&pool->waiting)) {
        q = ngx_queue_head(&pool->waiting);
        cmd = ngx_queue_data(q, ngx_fc_redis_cmd_t, queue);

        ngx_http_fc_redis_dequeue(pool, cmd);
        cmd->state = NGX_HTTP_FC_REDIS_CMD_FINISHED;
    }

    while (!ngx_queue_empty(&pool->busy)) {
        q = ngx_queue_head(&pool->busy);
        conn = ngx_queue_data(q, ngx_http_fc_redis_conn_t, queue);

        if (conn->cmd) {
            conn->cmd->conn = NULL;
            conn->cmd->state = NGX_HTTP_FC_REDIS_CMD_FINISHED;
            conn->cmd = NULL;
        }

        ngx_http_fc_redis_close(conn);
    }

    while (!ngx_queue_empty(&pool->idle)) {
        q = ngx_queue_head(&pool->idle);
        conn = ngx_queue_data(q, ngx_http_fc_redis_conn_t, queue);

        ngx_http_fc_redis_close(conn);
    }

    ngx_http_fc_redis_pool = NULL;
}


ngx_fc_redis_script_t *
ngx_fc_redis_script_find(ngx_cycle_t *cycle, const char *name)
{
    size_t                          len;
    ngx_uint_t                      i;
    ngx_fc_redis_script_t          *script;
    ngx_http_fc_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_fc_redis_module);
    if (rmcf == NULL) {
        return NULL;
    }

    len = ngx_strlen(name);
    script = rmcf->scripts.elts;

    for (i = 0; i < rmcf->scripts.nelts; i++) {
        if (script[i].name.len == len
            && ngx_strncmp(script[i].name.data, name, len) == 0)
        {
            return &script[i];
        }
    }

    return NULL;
}


ngx_int_t
ngx_fc_redis_send(ngx_fc_redis_cmd_t *cmd)
{
    ngx_queue_t                  *q;
    ngx_pool_cleanup_t           *cln;
    ngx_http_request_t           *r;
    ngx_http_fc_redis_conn_t     *conn;
    ngx_http_fc_redis_pool_t     *pool;
    ngx_http_fc_redis_cleanup_t  *rcln;

    r = cmd->request;

    if (cmd->state != NGX_HTTP_FC_REDIS_CMD_NEW
        && cmd->state != NGX_HTTP_FC_REDIS_CMD_FINISHED)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "redis command sent again before it finished");
        return NGX_ERROR;
    }

    if (cmd->argc < 0
        || (cmd->script == NULL && cmd->argc == 0)
        || (cmd->script
            && (cmd->numkeys < 0 || cmd->numkeys > cmd->argc)))
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "malformed redis command: argc:%d numkeys:%d",
                      cmd->argc, cmd->numkeys);
        return NGX_ERROR;
    }

    rcln = ngx_palloc(r->pool, sizeof(ngx_http_fc_redis_cleanup_t));
    if (rcln == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    if (cmd->cleanup) {
        /* the previous reply stays with the previous cleanup */
        cmd->cleanup->cmd = NULL;
    }

    rcln->cmd = cmd;
    rcln->reply = NULL;

    cln->handler = ngx_http_fc_redis_cleanup;
    cln->data = rcln;

    cmd->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
    cmd->reply = NULL;
    cmd->conn = NULL;
    cmd->cleanup = rcln;
    cmd->out = NULL;
    cmd->out_len = 0;
    cmd->eval_argv = NULL;
    cmd->eval_argvlen = NULL;
    cmd->eval = 0;

    ngx_memzero(&cmd->event, sizeof(ngx_event_t));
    cmd->event.handler = ngx_http_fc_redis_cmd_handler;
    cmd->event.data = cmd;
    cmd->event.log = r->connection->log;

    if (ngx_http_fc_redis_encode(cmd) != NGX_OK) {
        cmd->state = NGX_HTTP_FC_REDIS_CMD_FINISHED;
        return NGX_ERROR;
    }

    pool = ngx_http_fc_redis_pool;

    if (pool == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "redis command failed: no fc_redis_server configured");
        ngx_http_fc_redis_complete(cmd, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return NGX_OK;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "redis send: argc:%d script:%d conns:%ui",
                   cmd->argc, cmd->script != NULL, pool->nconns);

    if (!ngx_queue_empty(&pool->idle)) {
        q = ngx_queue_head(&pool->idle);
        conn = ngx_queue_data(q, ngx_http_fc_redis_conn_t, queue);

        (void) ngx_http_fc_redis_run(conn, cmd);

    } else if (pool->nconns < (ngx_uint_t) pool->conf->pool_size) {

        if (ngx_http_fc_redis_connect(pool, cmd) != NGX_OK) {
            ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_REDIS,
                                              NGX_FC_ERR_CONNECT);
            ngx_http_fc_redis_complete(cmd, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       NULL);
        }

    } else if (pool->nwaiting < (ngx_uint_t) pool->conf->queue_size) {
        ngx_queue_insert_tail(&pool->waiting, &cmd->queue);
        pool->nwaiting++;
        cmd->state = NGX_HTTP_FC_REDIS_CMD_WAITING;

        ngx_add_timer(&cmd->event, pool->conf->queue_timeout);

        ngx_http_fc_redis_report(pool);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "redis queue is full: %ui commands wait for %ui "
                      "connections to %V", pool->nwaiting, pool->nconns,
                      &pool->conf->addr.name);

        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_REDIS,
                                          NGX_FC_ERR_QUEUE);
        ngx_http_fc_redis_complete(cmd, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
    }

    /* a connection may have failed while this command was placed */
    ngx_http_fc_redis_dispatch(pool);

    return NGX_OK;
}


/*
 * Encodes cmd into cmd->out.  A script becomes EVALSHA sha numkeys
 * argv...; its arguments are copied into r->pool, because a NOSCRIPT
 * reply needs them again for EVAL long after the caller's argv is gone.
 */
static ngx_int_t
ngx_http_fc_redis_encode(ngx_fc_redis_cmd_t *cmd)
{
    int                 i, n, argc;
    char               *out;
    u_char             *p;
    size_t              len, *argvlen;
    const char        **argv;
    ngx_pool_t         *rpool;

    if (cmd->script == NULL) {
        n = redisFormatCommandArgv(&out, cmd->argc, cmd->argv, cmd->argvlen);
        if (n < 0) {
            return NGX_ERROR;
        }

        cmd->out = out;
        cmd->out_len = n;

        return NGX_OK;
    }

    rpool = cmd->request->pool;
    argc = cmd->argc + 3;

    argv = ngx_palloc(rpool, argc * sizeof(const char *));
    argvlen = ngx_palloc(rpool, argc * sizeof(size_t));

    if (argv == NULL || argvlen == NULL) {
        return NGX_ERROR;
    }

    len = NGX_INT_T_LEN;

    for (i = 0; i < cmd->argc; i++) {
        argvlen[i + 3] = cmd->argvlen ? cmd->argvlen[i]
                                      : ngx_strlen(cmd->argv[i]);
        len += argvlen[i + 3];
    }

    p = ngx_pnalloc(rpool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = sizeof("EVALSHA") - 1;
    argv[1] = (const char *) cmd->script->sha1;
    argvlen[1] = sizeof(cmd->script->sha1);
    argv[2] = (const char *) p;
    argvlen[2] = ngx_sprintf(p, "%d", cmd->numkeys) - p;
    p += argvlen[2];

    for (i = 0; i < cmd->argc; i++) {
        argv[i + 3] = (const char *) p;
        p = ngx_cpymem(p, cmd->argv[i], argvlen[i + 3]);
    }

    n = redisFormatCommandArgv(&out, argc, argv, argvlen);
    if (n < 0) {
        return NGX_ERROR;
    }

    cmd->out = out;
    cmd->out_len = n;
    cmd->eval_argv = argv;
    cmd->eval_argvlen = argvlen;

    return NGX_OK;
}


/*
 * Gives waiting commands to idle connections, then to new connections
 * while the pool has room.  A command whose connection cannot even be
 * started fails at once, so that with Redis down the queue drains fast
 * instead of timing out.
 */
static void
ngx_http_fc_redis_dispatch(ngx_http_fc_redis_pool_t *pool)
{
    ngx_queue_t               *q;
    ngx_fc_redis_cmd_t        *cmd;
    ngx_http_fc_redis_conn_t  *conn;

    while (!ngx_queue_empty(&pool->waiting)) {

        q = ngx_queue_head(&pool->waiting);
        cmd = ngx_queue_data(q, ngx_fc_redis_cmd_t, queue);

        if (!ngx_queue_empty(&pool->idle)) {
            q = ngx_queue_head(&pool->idle);
            conn = ngx_queue_data(q, ngx_http_fc_redis_conn_t, queue);

            ngx_http_fc_redis_dequeue(pool, cmd);
            (void) ngx_http_fc_redis_run(conn, cmd);
            continue;
        }

        if (pool->nconns >= (ngx_uint_t) pool->conf->pool_size) {
            break;
        }

        ngx_http_fc_redis_dequeue(pool, cmd);

        if (ngx_http_fc_redis_connect(pool, cmd) != NGX_OK) {
            ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_REDIS,
                                              NGX_FC_ERR_CONNECT);
            ngx_http_fc_redis_complete(cmd, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       NULL);
        }
    }

    ngx_http_fc_redis_report(pool);
}


static void
ngx_http_fc_redis_dequeue(ngx_http_fc_redis_pool_t *pool,
    ngx_fc_redis_cmd_t *cmd)
{
    ngx_queue_remove(&cmd->queue);
    pool->nwaiting--;

    if (cmd->event.timer_set) {
        ngx_del_timer(&cmd->event);
    }

    cmd->state = NGX_HTTP_FC_REDIS_CMD_NEW;
}


/*
 * Opens a new connection for cmd.  Returns NGX_OK when cmd is bound to
 * it (even if it then failed at once: cmd is completed in that case),
 * or NGX_DECLINED when no connection could be started and cmd is
 * untouched.
 */
static ngx_int_t
ngx_http_fc_redis_connect(ngx_http_fc_redis_pool_t *pool,
    ngx_fc_redis_cmd_t *cmd)
{
    ngx_int_t                       rc;
    ngx_connection_t               *c;
    ngx_peer_connection_t           pc;
    ngx_http_fc_redis_conn_t       *conn;
    ngx_http_fc_redis_main_conf_t  *rmcf;

    rmcf = pool->conf;

    conn = ngx_calloc(sizeof(ngx_http_fc_redis_conn_t), pool->log);
    if (conn == NULL) {
        return NGX_DECLINED;
    }

    conn->reader = redisReaderCreate();
    if (conn->reader == NULL) {
        ngx_free(conn);
        return NGX_DECLINED;
    }

    ngx_memzero(&pc, sizeof(ngx_peer_connection_t));

    pc.sockaddr = rmcf->addr.sockaddr;
    pc.socklen = rmcf->addr.socklen;
    pc.name = &rmcf->addr.name;
    pc.get = ngx_event_get_peer;
    pc.log = &pool->conn_log;
    pc.log_error = NGX_ERROR_ERR;

    /* a refused connection is logged by ngx_event_connect_peer() */
    rc = ngx_event_connect_peer(&pc);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "redis connect to %V: %i", &rmcf->addr.name, rc);

    if (rc != NGX_OK && rc != NGX_AGAIN) {
        redisReaderFree(conn->reader);
        ngx_free(conn);
        return NGX_DECLINED;
    }

    c = pc.connection;

    c->data = conn;
    c->read->handler = ngx_http_fc_redis_read_handler;
    c->write->handler = ngx_http_fc_redis_write_handler;

    conn->pool = pool;
    conn->connection = c;
    conn->state = NGX_HTTP_FC_REDIS_CONNECTING;
    conn->cmd = cmd;

    cmd->conn = conn;
    cmd->state = NGX_HTTP_FC_REDIS_CMD_BOUND;

    ngx_queue_insert_tail(&pool->busy, &conn->queue);
    pool->nconns++;

    /* one timer on the read event bounds every phase of a connection */
    ngx_add_timer(c->read, rmcf->connect_timeout);

    ngx_http_fc_redis_report(pool);

    if (rc == NGX_OK) {
        (void) ngx_http_fc_redis_connected(conn);
    }

    return NGX_OK;
}


/*
 * The connect() finished, well or not.  Starts the handshake, or runs
 * the bound command when none is needed.  Returns NGX_OK while the
 * connection lives, NGX_DONE once it is closed.
 */
static ngx_int_t
ngx_http_fc_redis_connected(ngx_http_fc_redis_conn_t *conn)
{
    int                             err;
    socklen_t                       len;
    ngx_connection_t               *c;
    ngx_http_fc_redis_main_conf_t  *rmcf;

    c = conn->connection;
    rmcf = conn->pool->conf;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, err,
                      "redis connect to %V failed", &rmcf->addr.name);
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_CONNECT);
        return NGX_DONE;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "redis connected to %V", &rmcf->addr.name);

    if (rmcf->handshake.len) {
        conn->state = NGX_HTTP_FC_REDIS_HANDSHAKE;
        conn->replies = rmcf->handshake_replies;
        conn->out_pos = rmcf->handshake.data;
        conn->out_last = rmcf->handshake.data + rmcf->handshake.len;

        if (ngx_http_fc_redis_write(conn) == NGX_ERROR) {
            ngx_http_fc_redis_fail(conn, NGX_FC_ERR_CONNECT);
            return NGX_DONE;
        }

        return NGX_OK;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (conn->cmd) {
        return ngx_http_fc_redis_run(conn, conn->cmd);
    }

    return ngx_http_fc_redis_release(conn);
}


/*
 * Puts cmd on a ready connection (idle, or just opened for it) and
 * starts writing it.  Returns NGX_OK while the connection lives,
 * NGX_DONE once it is closed; cmd is completed in that case.
 */
static ngx_int_t
ngx_http_fc_redis_run(ngx_http_fc_redis_conn_t *conn, ngx_fc_redis_cmd_t *cmd)
{
    ngx_connection_t          *c;
    ngx_http_fc_redis_pool_t  *pool;

    c = conn->connection;
    pool = conn->pool;

    if (conn->state == NGX_HTTP_FC_REDIS_IDLE) {
        ngx_queue_remove(&conn->queue);
        ngx_queue_insert_tail(&pool->busy, &conn->queue);
        pool->nidle--;
        c->idle = 0;
    }

    conn->state = NGX_HTTP_FC_REDIS_BUSY;
    conn->cmd = cmd;
    conn->replies = 1;

    /* the connection owns the bytes now: an abandoned cmd may go away */
    conn->out = cmd->out;
    conn->out_pos = (u_char *) cmd->out;
    conn->out_last = (u_char *) cmd->out + cmd->out_len;
    cmd->out = NULL;

    cmd->conn = conn;
    cmd->state = NGX_HTTP_FC_REDIS_CMD_SENT;

    conn->start = ngx_current_msec;

    ngx_add_timer(c->read, cmd->timeout ? cmd->timeout
                                        : pool->conf->timeout);

    ngx_http_fc_redis_report(pool);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "redis run: %uz bytes, fd:%d",
                   (size_t) (conn->out_last - conn->out_pos), c->fd);

    if (ngx_http_fc_redis_write(conn) == NGX_ERROR) {
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * The connection has answered everything it was asked.  It serves the
 * head of the queue, or goes idle, or is closed beyond
 * fc_redis_keepalive idle connections.  Returns NGX_OK while the
 * connection lives, NGX_DONE once it is closed.
 */
static ngx_int_t
ngx_http_fc_redis_release(ngx_http_fc_redis_conn_t *conn)
{
    ngx_queue_t               *q;
    ngx_fc_redis_cmd_t        *cmd;
    ngx_http_fc_redis_pool_t  *pool;

    pool = conn->pool;

    conn->cmd = NULL;

    if (!ngx_queue_empty(&pool->waiting)) {
        q = ngx_queue_head(&pool->waiting);
        cmd = ngx_queue_data(q, ngx_fc_redis_cmd_t, queue);

        ngx_http_fc_redis_dequeue(pool, cmd);

        return ngx_http_fc_redis_run(conn, cmd);
    }

    if (ngx_exiting || ngx_terminate
        || pool->nidle >= (ngx_uint_t) pool->conf->keepalive)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                       "redis close surplus connection, fd:%d",
                       conn->connection->fd);

        ngx_http_fc_redis_close(conn);
        return NGX_DONE;
    }

    if (conn->state != NGX_HTTP_FC_REDIS_IDLE) {
        ngx_queue_remove(&conn->queue);
        ngx_queue_insert_head(&pool->idle, &conn->queue);
        pool->nidle++;
    }

    conn->state = NGX_HTTP_FC_REDIS_IDLE;
    conn->connection->idle = 1;

    ngx_http_fc_redis_report(pool);

    return NGX_OK;
}


/*
 * Writes what is left of the output.  Returns NGX_OK when all is sent,
 * NGX_AGAIN when the socket is full, NGX_ERROR on a broken connection
 * (logged here; the caller closes it).
 */
static ngx_int_t
ngx_http_fc_redis_write(ngx_http_fc_redis_conn_t *conn)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = conn->connection;

    while (conn->out_pos < conn->out_last) {

        n = c->send(c, conn->out_pos, conn->out_last - conn->out_pos);

        if (n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                          "redis send to %V failed",
                          &conn->pool->conf->addr.name);
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            return NGX_AGAIN;
        }

        conn->out_pos += n;
    }

    if (conn->out) {
        free(conn->out);
        conn->out = NULL;
    }

    conn->out_pos = NULL;
    conn->out_last = NULL;

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_fc_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_http_fc_redis_conn_t  *conn;
    ngx_http_fc_redis_pool_t  *pool;

    c = wev->data;
    conn = c->data;
    pool = conn->pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "redis write handler, fd:%d", c->fd);

    if (conn->state == NGX_HTTP_FC_REDIS_CONNECTING) {
        (void) ngx_http_fc_redis_connected(conn);

    } else if (conn->out_pos != conn->out_last) {
        if (ngx_http_fc_redis_write(conn) == NGX_ERROR) {
            ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        }
    }

    ngx_http_fc_redis_dispatch(pool);
}


static void
ngx_http_fc_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t          *c;
    ngx_http_fc_redis_conn_t  *conn;
    ngx_http_fc_redis_pool_t  *pool;

    c = rev->data;
    conn = c->data;
    pool = conn->pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "redis read handler, fd:%d", c->fd);

    if (rev->timedout) {
        ngx_http_fc_redis_timeout(conn);

    } else if (conn->state == NGX_HTTP_FC_REDIS_CONNECTING) {
        /* with epoll a failed connect() wakes the read side first */
        (void) ngx_http_fc_redis_connected(conn);

    } else if (c->close && conn->state == NGX_HTTP_FC_REDIS_IDLE) {
        /* the worker is shutting down gracefully */
        ngx_http_fc_redis_close(conn);

    } else {
        (void) ngx_http_fc_redis_read(conn);
    }

    ngx_http_fc_redis_dispatch(pool);
}


/*
 * Reads until the socket is drained, since epoll reports a readable
 * socket only once, and hands every complete reply on.  Returns NGX_OK
 * while the connection lives, NGX_DONE once it is closed.
 */
static ngx_int_t
ngx_http_fc_redis_read(ngx_http_fc_redis_conn_t *conn)
{
    void              *reply;
    ssize_t            n;
    ngx_str_t         *name;
    ngx_connection_t  *c;

    c = conn->connection;
    name = &conn->pool->conf->addr.name;

    for ( ;; ) {

        n = c->recv(c, conn->pool->buf, NGX_HTTP_FC_REDIS_RECV_SIZE);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {

            if (conn->state == NGX_HTTP_FC_REDIS_IDLE) {
                ngx_log_error(NGX_LOG_INFO, conn->pool->log, 0,
                              "redis %V closed an idle connection", name);
                ngx_http_fc_redis_close(conn);
                return NGX_DONE;
            }

            ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                          "redis %V %s while waiting for a reply", name,
                          n == 0 ? "closed the connection"
                                 : "connection failed");

            ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
            return NGX_DONE;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "redis recv: %z bytes", n);

        if (redisReaderFeed(conn->reader, (const char *) conn->pool->buf, n)
            != REDIS_OK)
        {
            ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                          "redis reply from %V not decoded: %s", name,
                          conn->reader->errstr);
            ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
            return NGX_DONE;
        }

        for ( ;; ) {
            if (redisReaderGetReply(conn->reader, &reply) != REDIS_OK) {
                ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                              "redis protocol error from %V: %s", name,
                              conn->reader->errstr);
                ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
                return NGX_DONE;
            }

            if (reply == NULL) {
                break;
            }

            if (ngx_http_fc_redis_process(conn, reply) != NGX_OK) {
                return NGX_DONE;
            }
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * Takes one decoded reply, which it owns from now on.  Returns NGX_OK
 * while the connection lives, NGX_DONE once it is closed.
 */
static ngx_int_t
ngx_http_fc_redis_process(ngx_http_fc_redis_conn_t *conn, redisReply *reply)
{
    ngx_str_t           *name;
    ngx_fc_redis_cmd_t  *cmd;
    ngx_connection_t    *c;

    c = conn->connection;
    name = &conn->pool->conf->addr.name;

    if (conn->replies == 0) {
        /* nothing was asked: an idle connection must stay silent */
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                      "redis %V sent an unexpected reply", name);
        freeReplyObject(reply);
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        return NGX_DONE;
    }

    conn->replies--;

    if (conn->state == NGX_HTTP_FC_REDIS_HANDSHAKE) {

        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                          "redis %V refused AUTH or SELECT: \"%*s\"", name,
                          ngx_min(reply->len, NGX_HTTP_FC_REDIS_ERRLOG_MAX),
                          reply->str);
            freeReplyObject(reply);
            ngx_http_fc_redis_fail(conn, NGX_FC_ERR_CONNECT);
            return NGX_DONE;
        }

        freeReplyObject(reply);

        if (conn->replies) {
            return NGX_OK;
        }

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "redis handshake done");

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        if (conn->cmd) {
            return ngx_http_fc_redis_run(conn, conn->cmd);
        }

        return ngx_http_fc_redis_release(conn);
    }

    cmd = conn->cmd;

    if (cmd == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "redis reply of an abandoned command dropped");

        freeReplyObject(reply);

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        ngx_http_fc_metrics_backend_latency(NGX_FC_BACKEND_REDIS,
                                            ngx_current_msec - conn->start);

        return ngx_http_fc_redis_release(conn);
    }

    if (cmd->script
        && !cmd->eval
        && reply->type == REDIS_REPLY_ERROR
        && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(reply);
        return ngx_http_fc_redis_eval(conn, cmd);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_http_fc_metrics_backend_latency(NGX_FC_BACKEND_REDIS,
                                        ngx_current_msec - conn->start);

    conn->cmd = NULL;
    cmd->conn = NULL;

    ngx_http_fc_redis_complete(cmd, NGX_OK, reply);

    return ngx_http_fc_redis_release(conn);
}


/*
 * Redis does not know the script (restarted, SCRIPT FLUSH): sends it
 * again as EVAL with the body, which also loads it for the next EVALSHA.
 * The command keeps its original deadline.
 */
static ngx_int_t
ngx_http_fc_redis_eval(ngx_http_fc_redis_conn_t *conn, ngx_fc_redis_cmd_t *cmd)
{
    int    n;
    char  *out;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                   "redis script \"%V\" not loaded on %V, sending EVAL",
                   &cmd->script->name, &conn->pool->conf->addr.name);

    cmd->eval = 1;
    cmd->eval_argv[0] = "EVAL";
    cmd->eval_argvlen[0] = sizeof("EVAL") - 1;
    cmd->eval_argv[1] = (const char *) cmd->script->body.data;
    cmd->eval_argvlen[1] = cmd->script->body.len;

    n = redisFormatCommandArgv(&out, cmd->argc + 3, cmd->eval_argv,
                               cmd->eval_argvlen);
    if (n < 0) {
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, 0,
                      "redis EVAL of script \"%V\" not encoded",
                      &cmd->script->name);
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        return NGX_DONE;
    }

    conn->out = out;
    conn->out_pos = (u_char *) out;
    conn->out_last = (u_char *) out + n;
    conn->replies = 1;

    if (ngx_http_fc_redis_write(conn) == NGX_ERROR) {
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_IO);
        return NGX_DONE;
    }

    return NGX_OK;
}


static void
ngx_http_fc_redis_timeout(ngx_http_fc_redis_conn_t *conn)
{
    ngx_http_fc_redis_main_conf_t  *rmcf;

    rmcf = conn->pool->conf;

    if (conn->state == NGX_HTTP_FC_REDIS_CONNECTING
        || conn->state == NGX_HTTP_FC_REDIS_HANDSHAKE)
    {
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, NGX_ETIMEDOUT,
                      "redis connect to %V timed out after %M ms",
                      &rmcf->addr.name, rmcf->connect_timeout);
        ngx_http_fc_redis_fail(conn, NGX_FC_ERR_CONNECT);
        return;
    }

    if (conn->cmd) {
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, NGX_ETIMEDOUT,
                      "redis command to %V timed out after %M ms",
                      &rmcf->addr.name, ngx_current_msec - conn->start);

    } else {
        ngx_log_error(NGX_LOG_ERR, conn->pool->log, NGX_ETIMEDOUT,
                      "redis command to %V timed out after its request "
                      "had gone", &rmcf->addr.name);
    }

    ngx_http_fc_redis_fail(conn, NGX_FC_ERR_TIMEOUT);
}


/* closes a connection that cannot be trusted, failing its command */
static void
ngx_http_fc_redis_fail(ngx_http_fc_redis_conn_t *conn, ngx_uint_t kind)
{
    ngx_fc_redis_cmd_t  *cmd;

    ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_REDIS, kind);

    if (conn->state == NGX_HTTP_FC_REDIS_BUSY) {
        ngx_http_fc_metrics_backend_latency(NGX_FC_BACKEND_REDIS,
                                            ngx_current_msec - conn->start);
    }

    cmd = conn->cmd;

    if (cmd) {
        conn->cmd = NULL;
        cmd->conn = NULL;
        ngx_http_fc_redis_complete(cmd, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
    }

    ngx_http_fc_redis_close(conn);
}


static void
ngx_http_fc_redis_close(ngx_http_fc_redis_conn_t *conn)
{
    ngx_http_fc_redis_pool_t  *pool;

    pool = conn->pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                   "redis close connection, fd:%d", conn->connection->fd);

    ngx_queue_remove(&conn->queue);

    if (conn->state == NGX_HTTP_FC_REDIS_IDLE) {
        pool->nidle--;
    }

    pool->nconns--;

    ngx_close_connection(conn->connection);

    redisReaderFree(conn->reader);

    if (conn->out) {
        free(conn->out);
    }

    ngx_free(conn);

    ngx_http_fc_redis_report(pool);
}


/*
 * Records the outcome and posts the handler call, so that the handler
 * runs from the event loop with the pool in a consistent state.
 */
static void
ngx_http_fc_redis_complete(ngx_fc_redis_cmd_t *cmd, ngx_int_t status,
    redisReply *reply)
{
    cmd->rc = status;
    cmd->reply = reply;
    cmd->cleanup->reply = reply;
    cmd->state = NGX_HTTP_FC_REDIS_CMD_DONE;

    ngx_post_event(&cmd->event, &ngx_posted_events);
}


/* a posted completion, or fc_redis_queue_timeout of a waiting command */
static void
ngx_http_fc_redis_cmd_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_fc_redis_cmd_t        *cmd;
    ngx_http_fc_redis_pool_t  *pool;

    cmd = ev->data;

    if (cmd->state == NGX_HTTP_FC_REDIS_CMD_WAITING) {
        pool = ngx_http_fc_redis_pool;

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "redis queue timeout: no connection to %V was free "
                      "within %M ms", &pool->conf->addr.name,
                      pool->conf->queue_timeout);

        ngx_queue_remove(&cmd->queue);
        pool->nwaiting--;

        ngx_http_fc_metrics_backend_error(NGX_FC_BACKEND_REDIS,
                                          NGX_FC_ERR_QUEUE);
        ngx_http_fc_redis_report(pool);

        cmd->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        cmd->reply = NULL;
    }

    ev->timedout = 0;

    /* the handler may send cmd again */
    cmd->state = NGX_HTTP_FC_REDIS_CMD_FINISHED;

    c = cmd->request->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "redis handler, conn:%i", cmd->rc);

    cmd->handler(cmd);

    ngx_http_run_posted_requests(c);
}


/* r->pool is being destroyed: the command, if still current, is dropped */
static void
ngx_http_fc_redis_cleanup(void *data)
{
    ngx_http_fc_redis_cleanup_t *rcln = data;

    ngx_fc_redis_cmd_t        *cmd;
    ngx_http_fc_redis_pool_t  *pool;

    cmd = rcln->cmd;

    if (cmd) {
        pool = ngx_http_fc_redis_pool;

        switch (cmd->state) {

        case NGX_HTTP_FC_REDIS_CMD_WAITING:
            ngx_queue_remove(&cmd->queue);
            pool->nwaiting--;
            ngx_http_fc_redis_report(pool);
            break;

        case NGX_HTTP_FC_REDIS_CMD_BOUND:
        case NGX_HTTP_FC_REDIS_CMD_SENT:
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, cmd->event.log, 0,
                           "redis command abandoned");
            cmd->conn->cmd = NULL;
            cmd->conn = NULL;
            break;

        default:
            break;
        }

        if (cmd->event.timer_set) {
            ngx_del_timer(&cmd->event);
        }

        if (cmd->event.posted) {
            ngx_delete_posted_event(&cmd->event);
        }

        if (cmd->out) {
            free(cmd->out);
            cmd->out = NULL;
        }

        cmd->state = NGX_HTTP_FC_REDIS_CMD_FINISHED;
    }

    if (rcln->reply) {
        freeReplyObject(rcln->reply);
    }
}


static void
ngx_http_fc_redis_report(ngx_http_fc_redis_pool_t *pool)
{
    ngx_http_fc_metrics_pool(NGX_FC_BACKEND_REDIS, pool->nconns - pool->nidle,
                             pool->nidle, pool->nwaiting);
}


static u_char *
ngx_http_fc_redis_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_fc_redis_pool_t *pool = log->data;

    return ngx_snprintf(buf, len, " while talking to redis %V",
                        &pool->conf->addr.name);
}

/*
 * fcd, the platform's worker daemon: declarations shared by its parts.
 *
 * fcd does the work that must not wait for an HTTP request: releasing
 * expired holds, and delivering the outbox (receipts to the cash
 * register, records to the CRM, documents to 1C) over HTTP with
 * libcurl.  It keeps one PostgreSQL connection, LISTENs on fc_outbox,
 * and runs its job table whenever a notification arrives or a tick
 * passes; a Redis connection, opened when there is work for it, keeps
 * the hot copy in step.  See core/README.md for the design.
 */

#ifndef _FCD_H_INCLUDED_
#define _FCD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "fcd_conf.h"


/* reconnection delays, milliseconds: doubled after each failure */
#define FCD_BACKOFF_MIN_MS    100
#define FCD_BACKOFF_MAX_MS    5000

/* a failure that repeats is logged again this often, ms */
#define FCD_LOG_FAILURE_MS    60000

/* libpq connect_timeout, seconds: a connect blocks the loop this long */
#define FCD_CONNECT_TIMEOUT   "5"

/* a job query that runs longer is cancelled by the server, ms */
#define FCD_STATEMENT_TIMEOUT "60000"

#define FCD_CHANNEL           "fc_outbox"

/* a Redis connect, and each Redis command, gives up after this, ms */
#define FCD_REDIS_TIMEOUT_MS  2000

/* release.lua and the like are a few kilobytes; this is a sanity bound */
#define FCD_SCRIPT_MAX        (1024 * 1024)

/* expired holds waiting for Redis, at most; see fcd_jobs.c */
#define FCD_PENDING_MAX       10000

/* ticks on which Redis may refuse one release before it is given up */
#define FCD_REFUSALS_MAX      10

/* a run stops releasing in Redis after this long, ms; the rest waits */
#define FCD_RELEASE_BUDGET_MS 2000

/* what fcd_redis_release() returns */
#define FCD_REDIS_OK          0
#define FCD_REDIS_DOWN        -1
#define FCD_REDIS_REFUSED     -2

/* a uuid's text, 36 characters, and its NUL */
#define FCD_AUTH_ID_LEN       40

/* an HTTP exchange gives up after these, ms: connecting, in all */
#define FCD_HTTP_CONNECT_TIMEOUT_MS  2000
#define FCD_HTTP_TIMEOUT_MS          10000

/* a longer answer is a failure: ours are a few hundred bytes */
#define FCD_HTTP_BODY_MAX     (64 * 1024)

/* deliveries in one run of the outbox job; the next run follows at once */
#define FCD_OUTBOX_BATCH      50

/* the cash register's token lives 24 h; it is renewed before that, ms */
#define FCD_ATOL_TOKEN_TTL_MS (23 * 3600 * 1000LL)

#define FCD_ATOL_TOKEN_LEN    512

/* what a delivery stores as the row's last_error, at most */
#define FCD_DELIVERY_ERR_LEN  512

/* what a delivery returns */
#define FCD_DELIVERED         0
#define FCD_DELIVERY_FAILED   -1     /* retried after a backoff */
#define FCD_DELIVERY_REFUSED  -2     /* the row itself is wrong: dead now */

/* whether a migration's function is there, as far as a job knows */
#define FCD_FN_UNKNOWN        0
#define FCD_FN_MISSING        1
#define FCD_FN_PRESENT        2


/* an expired hold that PostgreSQL released and Redis has yet to */
typedef struct {
    int64_t              contract_id;
    char                 auth_id[FCD_AUTH_ID_LEN];
    unsigned             refusals;      /* error replies so far */
} fcd_hold_t;

/* a Lua script as read from its file, and the SHA1 EVALSHA names it by */
typedef struct {
    char                *text;
    size_t               len;
    char                 sha1[41];
} fcd_script_t;

typedef struct fcd_s  fcd_t;

typedef int (*fcd_job_handler_pt)(fcd_t *fcd);

/* an outbox row as fc_outbox_next() returns it */
typedef struct {
    int64_t              id;
    const char          *kind;          /* crm, receipt, onec */
    int64_t              payment_id;    /* 0 if none */
    const char          *key;           /* the row's idempotency key */
    const char          *payload;       /* JSON text */
    int64_t              attempt;       /* this one's number, from 1 */
} fcd_outbox_row_t;

/* what one delivery attempt came to */
typedef struct {
    long                 status;        /* the last HTTP status, 0: none */
    char                *result;        /* JSON text, malloc()ed, if done */
    char                 error[FCD_DELIVERY_ERR_LEN];
} fcd_delivery_t;

typedef int (*fcd_deliver_pt)(fcd_t *fcd, const fcd_outbox_row_t *row,
    fcd_delivery_t *d);

/* an HTTP request, and its answer */
typedef struct {
    const char          *method;        /* GET or POST */
    const char          *url;
    const char          *body;          /* NULL: none */
    size_t               body_len;
    const char          *headers[4];    /* "Name: value", NULL-terminated */
    const char          *user;          /* Basic auth, or NULL */
    const char          *password;
} fcd_http_req_t;

typedef struct {
    long                 status;        /* 0 if nothing came back */
    char                *body;          /* NUL-terminated, malloc()ed */
    size_t               body_len;
    int                  too_long;      /* cut at FCD_HTTP_BODY_MAX */
    char                 error[CURL_ERROR_SIZE];
} fcd_http_resp_t;

typedef struct {
    const char          *name;
    fcd_job_handler_pt   handler;
} fcd_job_t;

struct fcd_s {
    const char          *conf_path;
    fcd_conf_t           conf;
    PGconn              *pg;
    unsigned             failures;      /* connection attempts in a row */
    int64_t              backoff_ms;    /* delay before the next attempt */
    int64_t              backoff_logged;        /* the delay last logged */
    int64_t              failure_logged;        /* when, monotonic ms */
    int                  notified;      /* a NOTIFY is waiting to be served */
    int                  holds_fn_missing;      /* already logged */

    redisContext        *redis;
    fcd_script_t         release;       /* conf/lua/release.lua */
    fcd_hold_t          *pending;       /* FCD_PENDING_MAX of them */
    size_t               npending;
    int                  redis_probe;   /* connect even with nothing to do */
    int                  redis_down;    /* the last attempt failed */
    int64_t              redis_logged;  /* last failure logged, monotonic */

    /* 1 if a SIGTERM or a SIGHUP waits: a long job ends its run early */
    int                (*stop_requested)(void);
    int                (*reload_requested)(void);

    int                  outbox_fn;     /* FCD_FN_* of fc_outbox_next() */
    CURL                *curl;          /* kept, so connections are reused */
    char                 atol_token[FCD_ATOL_TOKEN_LEN];
    int64_t              atol_token_at; /* when it was issued, monotonic */
};


/* opens the connection and LISTENs; 0, or -1 with the reason in err */
int fcd_pg_connect(fcd_t *fcd, char *err, size_t errlen);

void fcd_pg_close(fcd_t *fcd);

/*
 * Reads what the server sent and counts notifications into
 * fcd->notified; 0, or -1 if the connection is lost (and closed).
 */
int fcd_pg_consume(fcd_t *fcd);

/*
 * Writes "<what>: <detail>" to err, with the line breaks and indentation
 * of a libpq message folded into single blanks.
 */
void fcd_pg_message(const char *what, const char *detail, char *err,
    size_t errlen);

/*
 * Runs every job once, stopping early if stop() says so; closes the
 * connection if a job found it broken.
 */
void fcd_jobs_run(fcd_t *fcd, int (*stop)(void));

/*
 * Reads a Lua script file and computes its SHA1.  Returns 0, or -1 with
 * the reason in err and script untouched.
 */
int fcd_redis_script_load(const char *path, fcd_script_t *script,
    char *err, size_t errlen);

void fcd_redis_script_free(fcd_script_t *script);

/*
 * Connects to Redis with FCD_REDIS_TIMEOUT_MS for the connect and for
 * every later command, and authenticates; 0, or -1 with the reason in
 * err.
 */
int fcd_redis_connect(fcd_t *fcd, char *err, size_t errlen);

void fcd_redis_close(fcd_t *fcd);

/*
 * Runs release.lua for one hold.  Returns FCD_REDIS_OK (released, or
 * nothing was held), FCD_REDIS_DOWN (no answer: the connection is
 * closed) or FCD_REDIS_REFUSED (an error reply); the reason is in err.
 */
int fcd_redis_release(fcd_t *fcd, const fcd_hold_t *hold, char *err,
    size_t errlen);


/*
 * The outbox job: delivers what fc_outbox_next() hands out, one row per
 * transaction, at most FCD_OUTBOX_BATCH a run.  0, or -1 if the
 * database failed it.  See fcd_outbox.c.
 */
int fcd_outbox_job(fcd_t *fcd);

/* 1 if key can go into an HTTP header as it is: printable, no blank */
int fcd_outbox_key_usable(const char *key);

/*
 * A delivery's result for fc_outbox_done(), malloc()ed: the answer's
 * body if it is JSON, else {"http_status": N}; NULL if out of memory.
 */
char *fcd_outbox_result(const fcd_http_resp_t *resp);

/* the deliveries, one per kind of row */
int fcd_crm_deliver(fcd_t *fcd, const fcd_outbox_row_t *row,
    fcd_delivery_t *d);
int fcd_atol_deliver(fcd_t *fcd, const fcd_outbox_row_t *row,
    fcd_delivery_t *d);
int fcd_onec_deliver(fcd_t *fcd, const fcd_outbox_row_t *row,
    fcd_delivery_t *d);

/* forgets the cash register's token, wiping it */
void fcd_atol_forget_token(fcd_t *fcd);

/*
 * Builds 1C's document of a top-up from the onec row's payload into buf.
 * Returns its length, with the document's Ref_Key (a checked GUID) in
 * ref_key; or -1 with the reason in err.
 */
int fcd_onec_document(const char *payload, char *buf, size_t size,
    char *ref_key, size_t ref_key_size, char *err, size_t errlen);

/*
 * Builds the sell request of a receipt row's payload, with the company
 * and the VAT table of conf, into buf.  Returns its length, or -1 with
 * the reason in err.
 */
int fcd_atol_sell_request(const fcd_conf_t *conf, const char *payload,
    char *buf, size_t size, char *err, size_t errlen);

/*
 * Makes one HTTP request with the daemon's timeouts, no proxy and no
 * redirects.  Returns 0 if an answer came, whatever its status, or -1
 * with the reason in resp->error; resp->body is to be released with
 * fcd_http_resp_free() in both cases.
 */
int fcd_http_request(fcd_t *fcd, const fcd_http_req_t *req,
    fcd_http_resp_t *resp);

void fcd_http_resp_free(fcd_http_resp_t *resp);

/*
 * "http 503: <the start of the body>" or "<transport error>", for
 * last_error and the log; what is in the body must be no secret.
 */
void fcd_http_describe(const char *what, const fcd_http_resp_t *resp,
    char *buf, size_t size);

void fcd_http_close(fcd_t *fcd);


/* monotonic milliseconds, for delays and log rate limits */

static inline int64_t
fcd_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


extern const fcd_job_t  fcd_jobs[];


#endif /* _FCD_H_INCLUDED_ */

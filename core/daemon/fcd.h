/*
 * fcd, the platform's worker daemon: declarations shared by its parts.
 *
 * fcd does the work that must not wait for an HTTP request: releasing
 * expired holds now, delivering the outbox (to banks, the cash register,
 * 1C) later.  It keeps one PostgreSQL connection, LISTENs on fc_outbox,
 * and runs its job table whenever a notification arrives or a tick
 * passes; a Redis connection, opened when there is work for it, keeps
 * the hot copy in step.  See core/README.md for the design.
 */

#ifndef _FCD_H_INCLUDED_
#define _FCD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>

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

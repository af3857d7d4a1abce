/*
 * fcd, the platform's worker daemon: declarations shared by its parts.
 *
 * fcd does the work that must not wait for an HTTP request: releasing
 * expired holds now, delivering the outbox (to banks, the cash register,
 * 1C) later.  It keeps one PostgreSQL connection, LISTENs on fc_outbox,
 * and runs its job table whenever a notification arrives or a tick
 * passes.  See core/README.md for the design.
 */

#ifndef _FCD_H_INCLUDED_
#define _FCD_H_INCLUDED_


#include <limits.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "fc_log.h"
#include "fc_vat.h"


#define FCD_TICK_DEFAULT_MS   1000
#define FCD_TICK_MIN_MS       10
#define FCD_TICK_MAX_MS       3600000

/* reconnection delays, milliseconds: doubled after each failure */
#define FCD_BACKOFF_MIN_MS    100
#define FCD_BACKOFF_MAX_MS    5000

/* libpq connect_timeout, seconds: a connect blocks the loop this long */
#define FCD_CONNECT_TIMEOUT   "5"

/* a job query that runs longer is cancelled by the server, ms */
#define FCD_STATEMENT_TIMEOUT "60000"

#define FCD_CHANNEL           "fc_outbox"

/* identifiers longer than NAMEDATALEN - 1 are cut by PostgreSQL */
#define FCD_PG_NAME_LEN       64
#define FCD_PG_HOST_LEN       256
#define FCD_PG_PASSWORD_LEN   256

/* room for an error message, file and line included */
#define FCD_ERR_LEN           1024


typedef struct {
    char             pg_host[FCD_PG_HOST_LEN];  /* address or socket dir */
    int              pg_host_is_addr;
    int              pg_port;
    char             pg_dbname[FCD_PG_NAME_LEN];
    char             pg_user[FCD_PG_NAME_LEN];
    char             pg_password_file[PATH_MAX];
    char             pg_password[FCD_PG_PASSWORD_LEN];
    char             log_file[PATH_MAX];
    fc_log_level_t   log_level;
    char             pid_file[PATH_MAX];
    int64_t          tick_interval_ms;
    fc_vat_table_t   vat;
} fcd_conf_t;

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
};


/*
 * Reads the configuration file path into conf.  Returns 0, or -1 with
 * "<path>:<line>: <reason>" in err; conf is then unusable but holds no
 * secret.
 */
int fcd_conf_load(const char *path, fcd_conf_t *conf, char *err,
    size_t errlen);

/* wipes the password held in conf */
void fcd_conf_clear(fcd_conf_t *conf);

/* 1 if a and b connect differently (host, port, db, user, password) */
int fcd_conf_pg_changed(const fcd_conf_t *a, const fcd_conf_t *b);

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


extern const fcd_job_t  fcd_jobs[];


#endif /* _FCD_H_INCLUDED_ */

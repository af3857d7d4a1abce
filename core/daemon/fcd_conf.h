/*
 * fcd's configuration file (conf/fcd.conf): the settings and the reader.
 *
 * fcctl reads the same file with the same reader, so that the daemon and
 * the tool can never disagree about where PostgreSQL and Redis are, and
 * a key one of them would reject the other rejects too.
 */

#ifndef _FCD_CONF_H_INCLUDED_
#define _FCD_CONF_H_INCLUDED_


#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_log.h"
#include "fc_vat.h"


#define FCD_TICK_DEFAULT_MS   1000
#define FCD_TICK_MIN_MS       10
#define FCD_TICK_MAX_MS       3600000

#define FCD_PG_PORT_DEFAULT     5432
#define FCD_REDIS_PORT_DEFAULT  6379

/* identifiers longer than NAMEDATALEN - 1 are cut by PostgreSQL */
#define FCD_PG_NAME_LEN       64
#define FCD_HOST_LEN          256
#define FCD_PASSWORD_LEN      256

/* room for an error message, file and line included */
#define FCD_ERR_LEN           1024

#define FCD_URL_LEN           512
#define FCD_NAME_LEN          128

/* delivery of the outbox, defaults: see conf/fcd.conf */
#define FCD_OUTBOX_MAX_ATTEMPTS    12
#define FCD_OUTBOX_BACKOFF_MS      2000
#define FCD_OUTBOX_BACKOFF_MAX_MS  600000
#define FCD_REPORT_POLL_MS         500
#define FCD_REPORT_POLL_MAX        20

/* a count setting (attempts, polls) is 1 .. this */
#define FCD_COUNT_MAX              1000

/* the kind of 1C document a top-up becomes, UTF-8 */
#define FCD_ONEC_DOCUMENT_DEFAULT                                             \
    "ПоступлениеОплатыПоПлатежнойКарте"


typedef struct {
    char             pg_host[FCD_HOST_LEN];     /* address or socket dir */
    int              pg_host_is_addr;
    int              pg_port;
    char             pg_dbname[FCD_PG_NAME_LEN];
    char             pg_user[FCD_PG_NAME_LEN];
    char             pg_password_file[PATH_MAX];
    char             pg_password[FCD_PASSWORD_LEN];
    char             redis_host[FCD_HOST_LEN];  /* address or socket path */
    int              redis_host_is_addr;
    int              redis_port;
    char             redis_password_file[PATH_MAX];
    char             redis_password[FCD_PASSWORD_LEN];
    char             release_script[PATH_MAX];
    char             log_file[PATH_MAX];
    fc_log_level_t   log_level;
    char             pid_file[PATH_MAX];
    int64_t          tick_interval_ms;
    fc_vat_table_t   vat;

    /* the cash register (ATOL Online v4) */
    char             atol_url[FCD_URL_LEN];     /* .../possystem/v4 */
    char             atol_login[FCD_NAME_LEN];
    char             atol_password_file[PATH_MAX];
    char             atol_password[FCD_PASSWORD_LEN];
    char             atol_group[FCD_NAME_LEN];
    char             company_inn[16];
    char             company_sno[32];
    char             company_email[FCD_NAME_LEN];
    char             company_payment_address[FCD_URL_LEN];
    int64_t          report_poll_ms;
    int64_t          report_poll_max;

    /* the CRM and 1C */
    char             crm_url[FCD_URL_LEN];
    char             onec_url[FCD_URL_LEN];
    char             onec_user[FCD_NAME_LEN];
    char             onec_password_file[PATH_MAX];
    char             onec_password[FCD_PASSWORD_LEN];
    char             onec_document[FCD_NAME_LEN];

    /* retries: attempts before a row is dead, delays between them */
    int64_t          outbox_max_attempts;
    int64_t          outbox_backoff_ms;
    int64_t          outbox_backoff_max_ms;
} fcd_conf_t;


/*
 * Reads the configuration file path into conf, the password files
 * included (the script file is the daemon's to read).  Returns 0, or -1
 * with "<path>:<line>: <reason>" in err; conf is then unusable but holds
 * no secret.
 */
int fcd_conf_load(const char *path, fcd_conf_t *conf, char *err,
    size_t errlen);

/* wipes the passwords held in conf */
void fcd_conf_clear(fcd_conf_t *conf);

/* 1 if a and b connect differently (host, port, db, user, password) */
int fcd_conf_pg_changed(const fcd_conf_t *a, const fcd_conf_t *b);

/* 1 if a and b connect to Redis differently (host, port, password) */
int fcd_conf_redis_changed(const fcd_conf_t *a, const fcd_conf_t *b);

/* 1 if a and b log in to the cash register differently */
int fcd_conf_atol_changed(const fcd_conf_t *a, const fcd_conf_t *b);


#endif /* _FCD_CONF_H_INCLUDED_ */

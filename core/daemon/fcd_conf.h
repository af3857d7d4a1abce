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


#endif /* _FCD_CONF_H_INCLUDED_ */

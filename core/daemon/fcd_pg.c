/*
 * fcd's PostgreSQL connection: connect, LISTEN, and read notifications.
 *
 * libpq is used in blocking mode: the daemon does one thing at a time,
 * and a job waiting on its query has nothing else to do.  Two settings
 * keep a blocking call from hanging for good: connect_timeout bounds a
 * connection attempt, and statement_timeout makes the server cancel a
 * job query that runs away.  TCP keepalives notice a peer that vanished
 * while the daemon sleeps in poll().
 */

#include <stdio.h>
#include <string.h>

#include "fcd.h"


static void fcd_pg_notice(void *arg, const char *message);


int
fcd_pg_connect(fcd_t *fcd, char *err, size_t errlen)
{
    int          n;
    char         port[8];
    PGconn      *pg;
    PGresult    *res;
    const char  *keys[16], *values[16];

    snprintf(port, sizeof(port), "%d", fcd->conf.pg_port);

    n = 0;
    keys[n] = fcd->conf.pg_host_is_addr ? "hostaddr" : "host";
    values[n++] = fcd->conf.pg_host;
    keys[n] = "port";
    values[n++] = port;
    keys[n] = "dbname";
    values[n++] = fcd->conf.pg_dbname;
    keys[n] = "user";
    values[n++] = fcd->conf.pg_user;

    if (fcd->conf.pg_password[0] != '\0') {
        keys[n] = "password";
        values[n++] = fcd->conf.pg_password;
    }

    keys[n] = "application_name";
    values[n++] = "fcd";
    keys[n] = "connect_timeout";
    values[n++] = FCD_CONNECT_TIMEOUT;
    keys[n] = "client_encoding";
    values[n++] = "UTF8";
    keys[n] = "keepalives_idle";
    values[n++] = "30";
    keys[n] = "keepalives_interval";
    values[n++] = "10";
    keys[n] = "keepalives_count";
    values[n++] = "3";
    keys[n] = "options";
    values[n++] = "-c statement_timeout=" FCD_STATEMENT_TIMEOUT;
    keys[n] = NULL;
    values[n] = NULL;

    /* expand_dbname = 0: a dbname holding "host=..." stays a name */
    pg = PQconnectdbParams(keys, values, 0);

    if (pg == NULL) {
        snprintf(err, errlen, "connect to postgresql: out of memory");
        return -1;
    }

    if (PQstatus(pg) != CONNECTION_OK) {
        fcd_pg_message("connect to postgresql", PQerrorMessage(pg), err,
                       errlen);
        PQfinish(pg);
        return -1;
    }

    /* libpq would print server notices to stderr, outside the log */
    PQsetNoticeProcessor(pg, fcd_pg_notice, NULL);

    res = PQexec(pg, "LISTEN " FCD_CHANNEL);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fcd_pg_message("LISTEN " FCD_CHANNEL, PQerrorMessage(pg), err,
                       errlen);
        PQclear(res);
        PQfinish(pg);
        return -1;
    }

    PQclear(res);

    fcd->pg = pg;
    fcd->holds_fn_missing = 0;
    fcd->outbox_fn = FCD_FN_UNKNOWN;

    fc_log(FC_LOG_INFO, "connected to postgresql %s:%d db \"%s\" as \"%s\", "
           "listening on " FCD_CHANNEL, fcd->conf.pg_host, fcd->conf.pg_port,
           fcd->conf.pg_dbname, fcd->conf.pg_user);

    return 0;
}


void
fcd_pg_close(fcd_t *fcd)
{
    if (fcd->pg != NULL) {
        PQfinish(fcd->pg);
        fcd->pg = NULL;
    }
}


int
fcd_pg_consume(fcd_t *fcd)
{
    char       err[FCD_ERR_LEN];
    PGnotify  *nt;

    if (PQconsumeInput(fcd->pg) != 1) {
        fcd_pg_message("reading from postgresql", PQerrorMessage(fcd->pg),
                       err, sizeof(err));
        fc_log(FC_LOG_ERR, "%s", err);
        fcd_pg_close(fcd);
        return -1;
    }

    while ((nt = PQnotifies(fcd->pg)) != NULL) {
        fcd->notified++;
        PQfreemem(nt);
    }

    return 0;
}


/*
 * libpq messages end with a newline and continue on indented lines; they
 * become one line with single blanks.
 */

void
fcd_pg_message(const char *what, const char *detail, char *err,
    size_t errlen)
{
    int     n;
    size_t  i, len;

    n = snprintf(err, errlen, "%s: ", what);

    if (n < 0 || (size_t) n >= errlen) {
        return;
    }

    len = (size_t) n;

    for (i = 0; detail[i] != '\0' && len < errlen - 1; i++) {
        if (detail[i] == '\n' || detail[i] == '\t' || detail[i] == ' ') {
            if (err[len - 1] != ' ') {
                err[len++] = ' ';
            }

            continue;
        }

        err[len++] = detail[i];
    }

    while (err[len - 1] == ' ') {
        len--;
    }

    err[len] = '\0';
}


static void
fcd_pg_notice(void *arg, const char *message)
{
    char  err[FCD_ERR_LEN];

    (void) arg;

    fcd_pg_message("postgresql says", message, err, sizeof(err));
    fc_log(FC_LOG_WARN, "%s", err);
}

/*
 * fcd's jobs.
 *
 * A job is a function that does one kind of background work to the end
 * of what is due now, then returns: 0 if it did its work or had none,
 * -1 if the database failed it.  Jobs run one after the other, in table
 * order, on every tick and every fc_outbox notification, so each must
 * be cheap when there is nothing to do and safe to run again at once: a
 * job never relies on having been called for a particular event.
 *
 * A job logs one line when it changed something and stays silent
 * otherwise, so that a quiet system has a quiet log.
 *
 * Jobs may depend on database functions that a later migration creates;
 * such a job checks for the function and skips itself until it exists,
 * saying so once per connection.
 */

#include <stdlib.h>
#include <string.h>

#include "fcd.h"


/* type OIDs of PostgreSQL's integers (server/catalog/pg_type_d.h) */
#define FCD_INT8OID  20
#define FCD_INT2OID  21
#define FCD_INT4OID  23


static int fcd_job_release_holds(fcd_t *fcd);
static int fcd_job_query_failed(fcd_t *fcd, PGresult *res,
    const char *what);


const fcd_job_t  fcd_jobs[] = {
    { "release_expired_holds", fcd_job_release_holds },
    { NULL, NULL }
};


void
fcd_jobs_run(fcd_t *fcd, int (*stop)(void))
{
    const fcd_job_t  *job;

    for (job = fcd_jobs; job->name != NULL; job++) {

        if (fcd->pg == NULL || stop()) {
            return;
        }

        if (job->handler(fcd) != 0 && PQstatus(fcd->pg) != CONNECTION_OK) {
            fc_log(FC_LOG_ERR, "job %s: lost the postgresql connection",
                   job->name);
            fcd_pg_close(fcd);
            return;
        }
    }

    /* notifications that came in while the jobs ran */
    if (fcd->pg != NULL) {
        (void) fcd_pg_consume(fcd);
    }
}


/*
 * Holds (amounts authorized at the pump and not yet completed) that
 * expired are released by fc_release_expired_holds().  The logic is in
 * the database, next to the data, so that the API and the daemon cannot
 * disagree about it.  The function may take no argument or an optional
 * "now" (timestamptz), and may return either the number of holds it
 * released or one row per released hold; both are counted here.
 *
 * It is looked up first because it comes with a migration that may not
 * have run yet; the daemon must not fail for that.
 */

static int
fcd_job_release_holds(fcd_t *fcd)
{
    int        nrows;
    Oid        type;
    long long  n;
    PGresult  *res;

    res = PQexec(fcd->pg,
                 "SELECT coalesce("
                 "to_regprocedure('fc_release_expired_holds()'), "
                 "to_regprocedure('fc_release_expired_holds(timestamptz)')"
                 ") IS NOT NULL");

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return fcd_job_query_failed(fcd, res, "looking up "
                                    "fc_release_expired_holds()");
    }

    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);

        if (!fcd->holds_fn_missing) {
            fc_log(FC_LOG_INFO, "fc_release_expired_holds() does not exist, "
                   "holds are not released until it does");
            fcd->holds_fn_missing = 1;
        }

        return 0;
    }

    PQclear(res);

    if (fcd->holds_fn_missing) {
        fc_log(FC_LOG_INFO, "fc_release_expired_holds() exists now");
        fcd->holds_fn_missing = 0;
    }

    res = PQexec(fcd->pg, "SELECT * FROM fc_release_expired_holds()");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return fcd_job_query_failed(fcd, res, "fc_release_expired_holds()");
    }

    nrows = PQntuples(res);
    type = (PQnfields(res) == 1) ? PQftype(res, 0) : 0;

    if (nrows == 1
        && (type == FCD_INT8OID || type == FCD_INT4OID || type == FCD_INT2OID))
    {
        n = PQgetisnull(res, 0, 0) ? 0
                                   : strtoll(PQgetvalue(res, 0, 0), NULL, 10);

    } else {
        n = nrows;
    }

    PQclear(res);

    if (n > 0) {
        fc_log(FC_LOG_INFO, "released %lld expired hold%s", n,
               n == 1 ? "" : "s");
    }

    return 0;
}


static int
fcd_job_query_failed(fcd_t *fcd, PGresult *res, const char *what)
{
    char         err[FCD_ERR_LEN];
    const char  *msg;

    msg = PQresultErrorMessage(res);

    if (msg[0] == '\0') {
        msg = PQerrorMessage(fcd->pg);
    }

    fcd_pg_message(what, msg, err, sizeof(err));
    fc_log(FC_LOG_ERR, "%s", err);

    PQclear(res);

    return -1;
}

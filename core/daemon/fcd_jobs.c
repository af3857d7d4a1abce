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
 * A job whose queue can be long (the outbox, fcd_outbox.c) may instead
 * stop after a bounded amount of work, or when a signal waits, and
 * count a notification in fcd->notified: the loop then runs the table
 * again at once, having served the signal first.
 *
 * Jobs may depend on database functions that a later migration creates;
 * such a job checks for the function and skips itself until it exists,
 * saying so once per connection.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fcd.h"


static int fcd_job_release_holds(fcd_t *fcd);
static int fcd_hold_from_row(PGresult *res, int row, fcd_hold_t *hold);
static void fcd_holds_release(fcd_t *fcd, size_t n, size_t earlier);
static int fcd_job_query_failed(fcd_t *fcd, PGresult *res,
    const char *what);


const fcd_job_t  fcd_jobs[] = {
    { "release_expired_holds", fcd_job_release_holds },
    { "deliver_outbox", fcd_outbox_job },
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
 * Releasing expired holds, in PostgreSQL and then in Redis.
 *
 * A hold is what an authorization set aside at the pump until the fill
 * is completed; one that is never completed expires.  Releasing it takes
 * two writes in two systems.  fc_release_expired_holds() marks the rows
 * expired and returns them, committed; the logic is in the database,
 * next to the data, so that the API and the daemon cannot disagree
 * about it.  Then release.lua gives each hold's amount and usage back in
 * Redis, the hot copy that authorizations decide on.
 *
 * PostgreSQL goes first because it is the record: once it says expired,
 * the hold is gone, and Redis only has to catch up.  The two writes
 * cannot be one transaction, so the second may fail after the first
 * committed: Redis is down, slower than FCD_REDIS_TIMEOUT_MS, or refuses
 * the script.  The holds PostgreSQL returned then stay in memory
 * (fcd->pending) and are tried again on every run until Redis takes
 * them.  release.lua deletes the hold it releases, so a second try, or
 * one racing authorize.lua, finds nothing and changes nothing.
 *
 * The list is bounded by FCD_PENDING_MAX, and a hold that Redis refuses
 * FCD_REFUSALS_MAX times is dropped, so that one bad key cannot keep the
 * list full.  What is dropped, or still pending when the daemon stops,
 * is logged and stays held in Redis, which is safe (it only lowers the
 * available amount) and heals: authorize.lua releases a contract's
 * expired holds before it decides, and `fcctl rebuild` heals all at
 * once.
 *
 * The function is looked up first because it comes with a migration
 * that may not have run yet; the daemon must not fail for that.
 */

static int
fcd_job_release_holds(fcd_t *fcd)
{
    int         i, nrows;
    size_t      earlier, bad, lost;
    PGresult   *res;
    fcd_hold_t  hold;

    res = PQexec(fcd->pg,
                 "SELECT to_regprocedure("
                 "'fc_release_expired_holds(timestamptz)') IS NOT NULL");

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

        fcd_holds_release(fcd, 0, fcd->npending);

        return 0;
    }

    PQclear(res);

    if (fcd->holds_fn_missing) {
        fc_log(FC_LOG_INFO, "fc_release_expired_holds() exists now");
        fcd->holds_fn_missing = 0;
    }

    res = PQexec(fcd->pg, "SELECT contract_id, auth_id"
                          " FROM fc_release_expired_holds()");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return fcd_job_query_failed(fcd, res, "fc_release_expired_holds()");
    }

    earlier = fcd->npending;
    nrows = PQntuples(res);
    bad = 0;
    lost = 0;

    for (i = 0; i < nrows; i++) {

        if (fcd_hold_from_row(res, i, &hold) != 0) {
            bad++;
            continue;
        }

        if (fcd->npending == FCD_PENDING_MAX) {
            lost++;
            continue;
        }

        fcd->pending[fcd->npending++] = hold;
    }

    PQclear(res);

    if (bad > 0) {
        fc_log(FC_LOG_ERR, "fc_release_expired_holds() returned %zu rows "
               "without a contract id and an auth id; those holds stay "
               "held in redis, fcctl rebuild is needed", bad);
    }

    if (lost > 0) {
        fc_log(FC_LOG_ERR, "%zu expired holds released in postgresql do "
               "not fit the list of %d waiting for redis; they stay held in "
               "redis until their contract's next authorization, fcctl "
               "rebuild is needed", lost, FCD_PENDING_MAX);
    }

    fcd_holds_release(fcd, (size_t) nrows, earlier);

    return 0;
}


/* 0 and the hold of row row, or -1 if the row does not make one */

static int
fcd_hold_from_row(PGresult *res, int row, fcd_hold_t *hold)
{
    int          len;
    char        *end;
    long long    id;
    const char  *value;

    if (PQgetisnull(res, row, 0) || PQgetisnull(res, row, 1)) {
        return -1;
    }

    value = PQgetvalue(res, row, 0);
    errno = 0;
    id = strtoll(value, &end, 10);

    if (errno != 0 || end == value || *end != '\0' || id <= 0) {
        return -1;
    }

    len = PQgetlength(res, row, 1);

    if (len <= 0 || len >= FCD_AUTH_ID_LEN) {
        return -1;
    }

    hold->contract_id = (int64_t) id;
    memcpy(hold->auth_id, PQgetvalue(res, row, 1), (size_t) len);
    hold->auth_id[len] = '\0';
    hold->refusals = 0;

    return 0;
}


/*
 * Runs release.lua for the pending holds, oldest first, within
 * FCD_RELEASE_BUDGET_MS, keeping those Redis did not take.  n holds came
 * from PostgreSQL in this run, earlier were pending before it.  Logs one
 * line for the run if it released anything or Redis failed it.
 */

static void
fcd_holds_release(fcd_t *fcd, size_t n, size_t earlier)
{
    int              rc, fresh;
    char             err[FCD_ERR_LEN];
    size_t           i, kept, released, refused;
    int64_t          start, now;
    fcd_hold_t      *hold;
    fc_log_level_t   level;

    if (fcd->npending == 0 && !fcd->redis_probe) {
        return;
    }

    err[0] = '\0';
    released = 0;
    refused = 0;
    fresh = 0;

    if (fcd->redis == NULL) {
        fcd->redis_probe = 0;
        fresh = (fcd_redis_connect(fcd, err, sizeof(err)) == 0);
    }

    start = fcd_now_ms();
    kept = 0;

    for (i = 0; i < fcd->npending; i++) {
        hold = &fcd->pending[i];
        rc = FCD_REDIS_DOWN;

        if (fcd->redis != NULL
            && fcd_now_ms() - start < FCD_RELEASE_BUDGET_MS)
        {
            rc = fcd_redis_release(fcd, hold, err, sizeof(err));

            /*
             * A connection idle since the last run may have been closed
             * by a Redis that restarted meanwhile: one new one is tried.
             */
            if (rc == FCD_REDIS_DOWN && !fresh) {
                fresh = 1;

                if (fcd_redis_connect(fcd, err, sizeof(err)) == 0) {
                    rc = fcd_redis_release(fcd, hold, err, sizeof(err));
                }
            }

            fresh = 1;
        }

        if (rc == FCD_REDIS_OK) {
            released++;
            continue;
        }

        if (rc == FCD_REDIS_REFUSED) {
            refused++;

            if (++hold->refusals >= FCD_REFUSALS_MAX) {
                fc_log(FC_LOG_ERR, "gave up releasing expired hold %s of "
                       "contract %lld in redis after %d refusals: %s; it "
                       "stays held until the contract's next "
                       "authorization, fcctl rebuild is needed",
                       hold->auth_id, (long long) hold->contract_id,
                       FCD_REFUSALS_MAX, err);
                continue;
            }
        }

        if (kept != i) {
            fcd->pending[kept] = *hold;
        }

        kept++;
    }

    fcd->npending = kept;
    now = fcd_now_ms();

    if (fcd->redis == NULL) {
        /* said when it happens, then once a minute while nothing moves */
        if (n == 0 && released == 0 && fcd->redis_down
            && now - fcd->redis_logged < FCD_LOG_FAILURE_MS)
        {
            return;
        }

        fcd->redis_down = 1;
        fcd->redis_logged = now;

        if (kept == 0) {
            fc_log(FC_LOG_ERR, "%s; expired holds will be released in "
                   "redis when it answers", err);
            return;
        }

    } else {
        fcd->redis_down = 0;

        if (kept == 0) {
            if (earlier == 0 && n > 0) {
                fc_log(FC_LOG_INFO, "released %zu expired hold%s", n,
                       n == 1 ? "" : "s");

            } else if (n == 0 && released > 0) {
                fc_log(FC_LOG_INFO, "released in redis %zu expired hold%s "
                       "left pending by earlier runs", released,
                       released == 1 ? "" : "s");

            } else if (n > 0) {
                fc_log(FC_LOG_INFO, "released %zu expired hold%s in "
                       "postgresql and %zu in redis, those left pending by "
                       "earlier runs included", n, n == 1 ? "" : "s",
                       released);
            }

            return;
        }

        if (refused == 0) {
            snprintf(err, sizeof(err), "out of time for this run");
        }
    }

    /* Redis away is an error; a refusal or lack of time only a delay */
    level = (fcd->redis == NULL) ? FC_LOG_ERR : FC_LOG_WARN;

    if (n == 0 && released == 0) {
        fc_log(level, "%zu expired hold%s still wait%s for redis: %s", kept,
               kept == 1 ? "" : "s", kept == 1 ? "s" : "", err);

    } else {
        fc_log(level, "released %zu expired hold%s in postgresql and %zu in "
               "redis; %zu wait for redis: %s", n, n == 1 ? "" : "s",
               released, kept, err);
    }
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

/*
 * Delivering the outbox: receipts to the cash register, outcomes to the
 * CRM, documents to 1C.
 *
 * The bank's notification, the ledger credit and the outbox rows that
 * announce them are written in one PostgreSQL transaction, which then
 * NOTIFYs fc_outbox.  What is left is to tell the outside world, at
 * least once, and without it ever acting twice.  Each row is delivered
 * in a transaction of its own on the daemon's connection:
 *
 *     BEGIN;
 *     SELECT ... FROM fc_outbox_next();       one due row, locked
 *     -- the HTTP exchange, the row still locked
 *     SELECT fc_outbox_done(id, result);      or
 *     SELECT fc_outbox_failed(id, error, max_attempts);
 *     COMMIT;
 *
 * fc_outbox_next() locks with FOR UPDATE SKIP LOCKED, so several
 * daemons on one database each take a different row, and a row being
 * delivered is invisible to the others until its outcome is committed.
 * If the daemon dies mid-delivery, the transaction aborts and the row
 * is due again; the retry is harmless because every service gets the
 * row's own idempotency key (the receipt's external_id, 1C's Ref_Key,
 * the CRM's Idempotency-Key) and does nothing the second time.
 *
 * A failed attempt is retried after a delay that doubles from
 * outbox_backoff_ms up to outbox_backoff_max_ms, times a random factor
 * in [0.5, 1.0], so that rows that failed together (a service that was
 * down) come back spread out; after outbox_max_attempts the row is
 * dead and waits for an operator's retry.  fc_outbox_failed() computes
 * the delay from the daemon's settings, so that the schedule is written
 * once, next to the data, and tests can compress it from fcd.conf.  A
 * row whose payload cannot be delivered at all (a broken payload, no
 * VAT rate for its date) is dead at once: retrying would not change it.
 *
 * A run delivers at most FCD_OUTBOX_BATCH rows, and stops between two
 * rows when a stop or a reload is pending; it then asks the loop to run
 * again at once, so a long queue neither starves the other jobs nor
 * delays a signal by more than one delivery.
 *
 * Every attempt is logged on one line: kind, row, payment, attempt,
 * outcome, HTTP status and duration.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fcd.h"


typedef struct {
    const char      *kind;
    fcd_deliver_pt   deliver;
} fcd_outbox_kind_t;


static int fcd_outbox_lookup(fcd_t *fcd);
static int fcd_outbox_deliver_one(fcd_t *fcd);
static void fcd_outbox_row(PGresult *res, fcd_outbox_row_t *row);
static int fcd_outbox_record(fcd_t *fcd, const fcd_outbox_row_t *row,
    int rc, fcd_delivery_t *d, int64_t ms);
static int fcd_outbox_exec(fcd_t *fcd, const char *sql, int nparams,
    const char *const *params, const char *what);
static void fcd_outbox_failed_query(fcd_t *fcd, PGresult *res,
    const char *what);
static void fcd_outbox_rollback(fcd_t *fcd);


static const fcd_outbox_kind_t  fcd_outbox_kinds[] = {
    { "receipt", fcd_atol_deliver },
    { "crm", fcd_crm_deliver },
    { "onec", fcd_onec_deliver },
    { NULL, NULL }
};


int
fcd_outbox_job(fcd_t *fcd)
{
    int  n, rc;

    rc = fcd_outbox_lookup(fcd);

    if (rc != 0) {
        return rc < 0 ? -1 : 0;
    }

    for (n = 0; n < FCD_OUTBOX_BATCH; n++) {

        if (n > 0
            && ((fcd->stop_requested != NULL && fcd->stop_requested())
                || (fcd->reload_requested != NULL
                    && fcd->reload_requested())))
        {
            fcd->notified++;
            return 0;
        }

        rc = fcd_outbox_deliver_one(fcd);

        if (rc <= 0) {
            return rc;
        }
    }

    /* more may be due: the loop comes back without waiting for a tick */
    fcd->notified++;

    return 0;
}


int
fcd_outbox_key_usable(const char *key)
{
    size_t  i;

    if (key == NULL || key[0] == '\0') {
        return 0;
    }

    for (i = 0; key[i] != '\0'; i++) {
        if (i == FCD_NAME_LEN || key[i] < 0x21 || key[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


char *
fcd_outbox_result(const fcd_http_resp_t *resp)
{
    char    *s;
    json_t  *json;

    json = (resp->body != NULL) ? json_loads(resp->body, 0, NULL) : NULL;

    if (json != NULL && (json_is_object(json) || json_is_array(json))) {
        json_decref(json);
        return strdup(resp->body);
    }

    json_decref(json);

    s = malloc(32);

    if (s != NULL) {
        snprintf(s, 32, "{\"http_status\": %ld}", resp->status);
    }

    return s;
}


/*
 * fc_outbox_next() comes with a migration that may not have run yet:
 * until it has, the job is skipped, which is said once.  Returns 0 if
 * the function is there, 1 if not, -1 if the query failed.
 */

static int
fcd_outbox_lookup(fcd_t *fcd)
{
    int        present;
    PGresult  *res;

    if (fcd->outbox_fn == FCD_FN_PRESENT) {
        return 0;
    }

    res = PQexec(fcd->pg, "SELECT to_regprocedure('fc_outbox_next()') "
                          "IS NOT NULL");

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fcd_outbox_failed_query(fcd, res, "looking up fc_outbox_next()");
        return -1;
    }

    present = (strcmp(PQgetvalue(res, 0, 0), "t") == 0);
    PQclear(res);

    if (!present) {
        if (fcd->outbox_fn != FCD_FN_MISSING) {
            fc_log(FC_LOG_INFO, "fc_outbox_next() does not exist, the "
                   "outbox is not delivered until it does");
            fcd->outbox_fn = FCD_FN_MISSING;
        }

        return 1;
    }

    if (fcd->outbox_fn == FCD_FN_MISSING) {
        fc_log(FC_LOG_INFO, "fc_outbox_next() exists now");
    }

    fcd->outbox_fn = FCD_FN_PRESENT;

    return 0;
}


/*
 * Claims one due row and delivers it, in one transaction.  Returns 1 if
 * a row was delivered or its failure recorded, 0 if none was due, -1
 * if the database failed (the transaction is then rolled back and the
 * row is due again).
 */

static int
fcd_outbox_deliver_one(fcd_t *fcd)
{
    int                       rc;
    int64_t                   start;
    PGresult                 *res;
    fcd_delivery_t            d;
    fcd_outbox_row_t          row;
    const fcd_outbox_kind_t  *k;

    if (fcd_outbox_exec(fcd, "BEGIN", 0, NULL, "BEGIN") != 0) {
        return -1;
    }

    res = PQexec(fcd->pg, "SELECT id, kind, payment_id, idempotency_key,"
                          " payload, attempts FROM fc_outbox_next()");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fcd_outbox_failed_query(fcd, res, "fc_outbox_next()");
        fcd_outbox_rollback(fcd);
        return -1;
    }

    /* a function returning one composite answers a row of nulls */
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return fcd_outbox_exec(fcd, "COMMIT", 0, NULL, "COMMIT");
    }

    fcd_outbox_row(res, &row);

    memset(&d, 0, sizeof(fcd_delivery_t));
    start = fcd_now_ms();
    rc = FCD_DELIVERY_REFUSED;
    snprintf(d.error, sizeof(d.error), "unknown kind \"%.32s\"", row.kind);

    for (k = fcd_outbox_kinds; k->kind != NULL; k++) {
        if (strcmp(k->kind, row.kind) == 0) {
            d.error[0] = '\0';
            rc = k->deliver(fcd, &row, &d);
            break;
        }
    }

    rc = fcd_outbox_record(fcd, &row, rc, &d, fcd_now_ms() - start);

    free(d.result);
    PQclear(res);

    return rc;
}


static void
fcd_outbox_row(PGresult *res, fcd_outbox_row_t *row)
{
    row->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    row->kind = PQgetvalue(res, 0, 1);
    row->payment_id = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    row->key = PQgetisnull(res, 0, 3) ? NULL : PQgetvalue(res, 0, 3);
    row->payload = PQgetisnull(res, 0, 4) ? "null" : PQgetvalue(res, 0, 4);
    row->attempt = strtoll(PQgetvalue(res, 0, 5), NULL, 10) + 1;
}


/*
 * Records the outcome of the attempt and commits, then logs it.  If
 * storing a result fails (say fc_outbox_done() finds the report
 * unusable), the attempt is recorded as failed instead, so that the row
 * waits out a backoff rather than being delivered again at once.
 */

static int
fcd_outbox_record(fcd_t *fcd, const fcd_outbox_row_t *row, int rc,
    fcd_delivery_t *d, int64_t ms)
{
    int              dead;
    char             id[24], max[24], base[24], cap[24];
    PGresult        *res;
    const char      *params[5];

    snprintf(id, sizeof(id), "%lld", (long long) row->id);

    if (rc == FCD_DELIVERED) {
        params[0] = id;
        params[1] = d->result;

        if (fcd_outbox_exec(fcd, "SELECT fc_outbox_done($1::bigint, "
                            "$2::jsonb)", 2, params, "fc_outbox_done()")
                == 0
            && fcd_outbox_exec(fcd, "COMMIT", 0, NULL, "COMMIT") == 0)
        {
            fc_log(FC_LOG_INFO, "outbox %s %lld payment %lld attempt %lld: "
                   "done, http %ld, %lld ms", row->kind, (long long) row->id,
                   (long long) row->payment_id, (long long) row->attempt,
                   d->status, (long long) ms);
            return 1;
        }

        if (PQstatus(fcd->pg) != CONNECTION_OK) {
            return -1;
        }

        fcd_outbox_rollback(fcd);

        if (fcd_outbox_exec(fcd, "BEGIN", 0, NULL, "BEGIN") != 0) {
            return -1;
        }

        snprintf(d->error, sizeof(d->error), "delivered, but recording the "
                 "result failed: see the daemon's log");
        rc = FCD_DELIVERY_FAILED;
    }

    /* a row that can never be delivered is dead now */
    snprintf(max, sizeof(max), "%lld", (long long)
             (rc == FCD_DELIVERY_REFUSED ? row->attempt
                                         : fcd->conf.outbox_max_attempts));
    snprintf(base, sizeof(base), "%lld",
             (long long) fcd->conf.outbox_backoff_ms);
    snprintf(cap, sizeof(cap), "%lld",
             (long long) fcd->conf.outbox_backoff_max_ms);

    params[0] = id;
    params[1] = d->error;
    params[2] = max;
    params[3] = base;
    params[4] = cap;

    res = PQexecParams(fcd->pg, "SELECT fc_outbox_failed($1::bigint, "
                       "$2::text, $3::int, $4::bigint, $5::bigint)", 5, NULL,
                       params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fcd_outbox_failed_query(fcd, res, "fc_outbox_failed()");
        fcd_outbox_rollback(fcd);
        return -1;
    }

    dead = (strcmp(PQgetvalue(res, 0, 0), "dead") == 0);
    PQclear(res);

    if (fcd_outbox_exec(fcd, "COMMIT", 0, NULL, "COMMIT") != 0) {
        return -1;
    }

    fc_log(dead ? FC_LOG_ERR : FC_LOG_WARN, "outbox %s %lld payment %lld "
           "attempt %lld: %s, http %ld, %lld ms: %s", row->kind,
           (long long) row->id, (long long) row->payment_id,
           (long long) row->attempt, dead ? "dead" : "failed", d->status,
           (long long) ms, d->error);

    return 1;
}


/* runs a statement whose rows are not needed; 0, or -1 logged */

static int
fcd_outbox_exec(fcd_t *fcd, const char *sql, int nparams,
    const char *const *params, const char *what)
{
    PGresult        *res;
    ExecStatusType   st;

    res = PQexecParams(fcd->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fcd_outbox_failed_query(fcd, res, what);
        return -1;
    }

    PQclear(res);

    return 0;
}


/* logs why a query failed, on one line, and frees its result */

static void
fcd_outbox_failed_query(fcd_t *fcd, PGresult *res, const char *what)
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
}


static void
fcd_outbox_rollback(fcd_t *fcd)
{
    PGresult  *res;

    if (PQstatus(fcd->pg) != CONNECTION_OK) {
        return;
    }

    res = PQexec(fcd->pg, "ROLLBACK");
    PQclear(res);
}

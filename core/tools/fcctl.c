/*
 * fcctl: rebuilds the hot state in Redis from PostgreSQL, and compares
 * the two.
 *
 *     fcctl -c <fcd.conf> rebuild [contract_id]
 *     fcctl -c <fcd.conf> compare [contract_id]
 *
 * PostgreSQL is the system of record; Redis holds the copy that an
 * authorization reads and changes in one round trip (docs/processing.md
 * lists the keys).  fc_hot_state(contract) returns every key PostgreSQL
 * implies, as rows of key, kind ('string', 'hash' or 'zset') and value
 * (jsonb: a string; an object of field -> string; an object of member ->
 * score).  Both commands read those rows and SCAN the keys Redis has
 * under the same hash tags: '{c:<id>}:*' for the contract given, or
 * '{c:*}:*' and '{fc}:*' for everything.
 *
 * Two kinds of key are never touched nor reported.  The txn keys hold
 * the stored answers of authorizations, which only serve retries and
 * which PostgreSQL answers itself when they are gone.  The counters of
 * periods that have ended are not read by any decision and expire on
 * their own; a counter of a current period that PostgreSQL does not
 * list counts as 0, so one holding "0" is no difference either.
 *
 * The exit status is 0 when all went well (compare: no difference), 1
 * when compare found differences, 2 when the work could not be done: a
 * bad command line or configuration, a server that cannot be reached or
 * refuses, a query that fails.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "fcd_conf.h"


#define FCCTL_OK                 0
#define FCCTL_DIFFERENT          1
#define FCCTL_FAILED             2

#define FCCTL_CONNECT_TIMEOUT    5        /* seconds */
#define FCCTL_REDIS_TIMEOUT      30       /* seconds, per reply */

#define FCCTL_SCAN_COUNT         "1000"   /* keys asked of SCAN per call */
#define FCCTL_BATCH              1000     /* commands in flight at most */

/* the same lifetimes as conf/lua/authorize.lua gives these keys */
#define FCCTL_COUNTER_TTL        "34560000"   /* seconds, 400 days */
#define FCCTL_HOLD_GRACE         86400        /* seconds after expiry */

/*
 * The expiry of a hold is computed twice: by authorize.lua from the
 * clock nginx passes, and by PostgreSQL from its own clock when the
 * decision is recorded a moment later.  Scores and exp fields that
 * differ by no more than this many seconds are the same expiry.
 */
#define FCCTL_EXP_SLACK          5

/* a contract rebuilt while authorizations run is tried this often */
#define FCCTL_REBUILD_TRIES      5


typedef struct {
    int               argc;
    int               nalloc;
    int               failed;       /* out of memory on the way */
    char            **argv;
    size_t           *lens;
} fcctl_cmd_t;

typedef struct {
    const char       *conf_path;
    fcd_conf_t        conf;
    PGconn           *pg;
    redisContext     *redis;
    int64_t           contract;     /* 0: every contract */
    char              contract_text[24];

    json_t           *expected;     /* key -> {"t": type, "v": value} */
    json_t           *current;      /* counter key -> true, this period */
    json_t           *present;      /* key -> true, found by SCAN */
    json_t           *actual;       /* key -> {"t": type, "v": value} */
    unsigned          txn_keys;

    unsigned          pending;      /* replies not yet read */
    int               aborted;      /* an EXEC failed on a WATCH */
    unsigned          written;
    unsigned          deleted;
    unsigned          differences;
} fcctl_t;


static void fcctl_usage(FILE *out);
static int fcctl_pg_connect(fcctl_t *fc);
static int fcctl_redis_connect(fcctl_t *fc);
static int fcctl_load_expected(fcctl_t *fc);
static int fcctl_expected_add(fcctl_t *fc, const char *key,
    const char *kind, const char *text);
static json_t *fcctl_as_text(json_t *v);
static int fcctl_load_current(fcctl_t *fc);
static int fcctl_scan(fcctl_t *fc, const char *pattern);
static int fcctl_fetch(fcctl_t *fc);
static int fcctl_fetch_batch(fcctl_t *fc, const char **keys, size_t n);
static json_t *fcctl_reply_value(const char *type, redisReply *r);
static int fcctl_compare(fcctl_t *fc);
static void fcctl_compare_key(fcctl_t *fc, const char *key, json_t *exp,
    json_t *act);
static int fcctl_same_text(const char *key, const char *field,
    const char *a, const char *b);
static void fcctl_diff(fcctl_t *fc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fcctl_quote(const char *s, char *buf, size_t size);
static int fcctl_rebuild(fcctl_t *fc);
static int fcctl_write_groups(fcctl_t *fc);
static int fcctl_write_group(fcctl_t *fc, const char **keys, size_t n);
static int fcctl_write_key(fcctl_t *fc, const char *key, json_t *entry);
static int fcctl_drain(fcctl_t *fc);
static int fcctl_redis_check(fcctl_t *fc, redisReply *r, const char *what);
static void fcctl_cmd_init(fcctl_cmd_t *cmd);
static void fcctl_cmd_add(fcctl_cmd_t *cmd, const char *s, size_t len);
static void fcctl_cmd_addf(fcctl_cmd_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fcctl_cmd_send(fcctl_t *fc, fcctl_cmd_t *cmd);
static void fcctl_cmd_free(fcctl_cmd_t *cmd);
static int fcctl_send(fcctl_t *fc, const char *a, const char *b);
static int fcctl_send3(fcctl_t *fc, const char *cmd, const char *key,
    const char *tail);
static size_t fcctl_key_tag(const char *key);
static const char *fcctl_key_rest(const char *key);
static int fcctl_key_is(const char *key, const char *what);
static int fcctl_key_cmp(const void *a, const void *b);
static const char **fcctl_sorted_keys(json_t *a, json_t *b, size_t *n);
static int fcctl_parse_i64(const char *s, int64_t min, int64_t max,
    int64_t *out);
static void fcctl_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


int
main(int argc, char **argv)
{
    int          rc, opt;
    char         err[FCD_ERR_LEN];
    fcctl_t      fc;
    const char  *command;

    memset(&fc, 0, sizeof(fcctl_t));

    while ((opt = getopt(argc, argv, "c:h")) != -1) {
        switch (opt) {
        case 'c':
            fc.conf_path = optarg;
            break;
        case 'h':
            fcctl_usage(stdout);
            return FCCTL_OK;
        default:
            fcctl_usage(stderr);
            return FCCTL_FAILED;
        }
    }

    if (fc.conf_path == NULL || optind >= argc || argc - optind > 2) {
        fcctl_usage(stderr);
        return FCCTL_FAILED;
    }

    command = argv[optind];

    if (strcmp(command, "rebuild") != 0 && strcmp(command, "compare") != 0) {
        fcctl_error("unknown command \"%s\"", command);
        fcctl_usage(stderr);
        return FCCTL_FAILED;
    }

    if (argc - optind == 2) {
        if (fcctl_parse_i64(argv[optind + 1], 1, INT64_MAX, &fc.contract)
            != 0)
        {
            fcctl_error("contract_id: must be a positive whole number, "
                        "got \"%s\"", argv[optind + 1]);
            return FCCTL_FAILED;
        }

        snprintf(fc.contract_text, sizeof(fc.contract_text), "%" PRId64,
                 fc.contract);
    }

    if (fcd_conf_load(fc.conf_path, &fc.conf, err, sizeof(err)) != 0) {
        fcctl_error("%s", err);
        return FCCTL_FAILED;
    }

    fc.expected = json_object();
    fc.current = json_object();
    fc.present = json_object();
    fc.actual = json_object();

    if (fc.expected == NULL || fc.current == NULL || fc.present == NULL
        || fc.actual == NULL)
    {
        fcctl_error("out of memory");
        fcd_conf_clear(&fc.conf);
        return FCCTL_FAILED;
    }

    rc = FCCTL_FAILED;

    if (fcctl_pg_connect(&fc) != 0 || fcctl_redis_connect(&fc) != 0) {
        fcd_conf_clear(&fc.conf);
        goto done;
    }

    /* the passwords served their purpose */
    fcd_conf_clear(&fc.conf);

    if (strcmp(command, "compare") == 0) {
        rc = fcctl_compare(&fc);

    } else {
        rc = fcctl_rebuild(&fc);
    }

done:

    if (fc.redis) {
        redisFree(fc.redis);
    }

    if (fc.pg) {
        PQfinish(fc.pg);
    }

    json_decref(fc.expected);
    json_decref(fc.current);
    json_decref(fc.present);
    json_decref(fc.actual);

    return rc;
}


static void
fcctl_usage(FILE *out)
{
    fprintf(out,
        "usage: fcctl -c <fcd.conf> rebuild [contract_id]\n"
        "       fcctl -c <fcd.conf> compare [contract_id]\n"
        "\n"
        "rebuild  writes into Redis what PostgreSQL implies (fc_hot_state)\n"
        "         and deletes what it does not, except stored answers\n"
        "         (txn keys).  Without contract_id: every contract and the\n"
        "         {fc} look-ups, for a quiet system only.\n"
        "compare  prints every difference, then \"N differences\"; exit 0\n"
        "         when there is none, 1 when there are, 2 on failure.\n");
}


/*
 * The configuration is fcd's own file, read by fcd's own parser
 * (core/daemon/fcd_conf.c): the same keys, the same checks, and the
 * passwords already read from their files.
 */

static int
fcctl_pg_connect(fcctl_t *fc)
{
    int            i;
    char           port[16], timeout[16];
    const char    *keys[8], *values[8], *msg;
    fcd_conf_t    *conf;

    conf = &fc->conf;
    i = 0;

    snprintf(port, sizeof(port), "%d", conf->pg_port);

    /* hostaddr: a numeric address is used as it is, never resolved */
    keys[i] = conf->pg_host_is_addr ? "hostaddr" : "host";
    values[i++] = conf->pg_host;
    keys[i] = "port";               values[i++] = port;
    keys[i] = "dbname";             values[i++] = conf->pg_dbname;
    keys[i] = "user";               values[i++] = conf->pg_user;
    keys[i] = "application_name";   values[i++] = "fcctl";

    snprintf(timeout, sizeof(timeout), "%d", FCCTL_CONNECT_TIMEOUT);
    keys[i] = "connect_timeout";    values[i++] = timeout;

    if (conf->pg_password[0] != '\0') {
        keys[i] = "password";       values[i++] = conf->pg_password;
    }

    keys[i] = NULL;
    values[i] = NULL;

    fc->pg = PQconnectdbParams(keys, values, 0);

    if (fc->pg == NULL || PQstatus(fc->pg) != CONNECTION_OK) {
        msg = fc->pg ? PQerrorMessage(fc->pg) : "out of memory\n";
        fcctl_error("cannot connect to postgresql at %s port %s as %s: %.*s",
                    conf->pg_host, port, conf->pg_user,
                    (int) strcspn(msg, "\n"), msg);
        return -1;
    }

    return 0;
}


static int
fcctl_redis_connect(fcctl_t *fc)
{
    const char     *argv[2];
    size_t          lens[2];
    redisReply     *r;
    fcd_conf_t     *conf;
    struct timeval  tv;

    conf = &fc->conf;
    tv.tv_sec = FCCTL_CONNECT_TIMEOUT;
    tv.tv_usec = 0;

    if (conf->redis_host_is_addr) {
        fc->redis = redisConnectWithTimeout(conf->redis_host,
                                            conf->redis_port, tv);

    } else {
        fc->redis = redisConnectUnixWithTimeout(conf->redis_host, tv);
    }

    if (fc->redis == NULL || fc->redis->err) {
        fcctl_error("cannot connect to redis at %s port %d: %s",
                    conf->redis_host, conf->redis_port,
                    fc->redis ? fc->redis->errstr : "out of memory");
        return -1;
    }

    tv.tv_sec = FCCTL_REDIS_TIMEOUT;
    redisSetTimeout(fc->redis, tv);

    if (conf->redis_password[0] == '\0') {
        return 0;
    }

    argv[0] = "AUTH";
    lens[0] = 4;
    argv[1] = conf->redis_password;
    lens[1] = strlen(conf->redis_password);

    r = redisCommandArgv(fc->redis, 2, argv, lens);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fcctl_error("redis at %s port %d refused the password from %s: %s",
                    conf->redis_host, conf->redis_port,
                    conf->redis_password_file,
                    r ? r->str : fc->redis->errstr);
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }

    freeReplyObject(r);

    return 0;
}


/*
 * Reads fc_hot_state() into fc->expected.  Returns 0, or -1 after
 * printing why.
 */

static int
fcctl_load_expected(fcctl_t *fc)
{
    int          i, n, rc;
    PGresult    *res;
    const char  *param;

    param = fc->contract ? fc->contract_text : NULL;

    res = PQexecParams(fc->pg,
                       "SELECT key, kind, value::text"
                       " FROM fc_hot_state($1::bigint)",
                       1, NULL, &param, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fcctl_error("fc_hot_state(%s) failed: %.*s",
                    param ? param : "NULL",
                    (int) strcspn(PQerrorMessage(fc->pg), "\n"),
                    PQerrorMessage(fc->pg));
        PQclear(res);
        return -1;
    }

    json_object_clear(fc->expected);
    n = PQntuples(res);
    rc = 0;

    for (i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 0) || PQgetisnull(res, i, 1)
            || PQgetisnull(res, i, 2))
        {
            fcctl_error("fc_hot_state returned a row with a null");
            rc = -1;
            break;
        }

        if (fcctl_expected_add(fc, PQgetvalue(res, i, 0),
                               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2))
            != 0)
        {
            rc = -1;
            break;
        }
    }

    PQclear(res);

    return rc;
}


/*
 * Adds one row of fc_hot_state() to fc->expected in the form the
 * comparison uses for both sides: a string as a JSON string, a hash as
 * an object of strings, a zset as an object of member -> real score.
 */

static int
fcctl_expected_add(fcctl_t *fc, const char *key, const char *kind,
    const char *text)
{
    json_t        *v, *val, *out, *item;
    const char    *field;
    json_error_t   err;

    v = json_loads(text, JSON_DECODE_ANY, &err);

    if (v == NULL) {
        fcctl_error("fc_hot_state: key %s: value is not JSON: %s", key,
                    err.text);
        return -1;
    }

    out = NULL;

    if (strcmp(kind, "string") == 0) {
        out = fcctl_as_text(v);

    } else if (strcmp(kind, "hash") == 0 && json_is_object(v)) {
        out = json_object();

        json_object_foreach(v, field, val) {
            item = fcctl_as_text(val);

            if (item == NULL) {
                json_decref(out);
                out = NULL;
                break;
            }

            json_object_set_new_nocheck(out, field, item);
        }

    } else if (strcmp(kind, "zset") == 0 && json_is_object(v)) {
        out = json_object();

        json_object_foreach(v, field, val) {
            if (!json_is_number(val)) {
                json_decref(out);
                out = NULL;
                break;
            }

            json_object_set_new_nocheck(out, field,
                                        json_real(json_number_value(val)));
        }

    } else {
        fcctl_error("fc_hot_state: key %s: unknown kind \"%s\" or a value "
                    "that does not fit it", key, kind);
        json_decref(v);
        return -1;
    }

    json_decref(v);

    if (out == NULL) {
        fcctl_error("fc_hot_state: key %s: a %s value of the wrong shape",
                    key, kind);
        return -1;
    }

    if (fcctl_key_tag(key) == 0) {
        fcctl_error("fc_hot_state: key %s has no hash tag", key);
        json_decref(out);
        return -1;
    }

    json_object_set_new_nocheck(fc->expected, key,
                                json_pack("{s:s, s:o}", "t", kind, "v", out));

    return 0;
}


/* a JSON string or integer as a JSON string; NULL for anything else */

static json_t *
fcctl_as_text(json_t *v)
{
    char  buf[32];

    if (json_is_string(v)) {
        return json_stringn_nocheck(json_string_value(v),
                                    json_string_length(v));
    }

    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        return json_string_nocheck(buf);
    }

    return NULL;
}


/*
 * Reads the counter keys of the current period of every quantity limit
 * in scope into fc->current, so that compare can tell a counter of this
 * period PostgreSQL does not list (a difference unless it is 0) from one
 * of a period that has ended (not a difference).  Returns 0, or -1
 * after printing why.
 */

static int
fcctl_load_current(fcctl_t *fc)
{
    int          i, n;
    PGresult    *res;
    const char  *param;

    param = fc->contract ? fc->contract_text : NULL;

    res = PQexecParams(fc->pg,
        "SELECT format('{c:%s}:use:%s:%s', l.contract_id, l.id,"
        "              p.period_key)"
        "  FROM limits l"
        "  JOIN contracts c ON c.id = l.contract_id"
        "  JOIN organizations o ON o.id = c.org_id"
        " CROSS JOIN LATERAL fc_period_bounds(o.timezone, now(),"
        "                                     l.period) p"
        " WHERE l.kind IN ('amount', 'volume', 'count')"
        "   AND l.period <> 'txn'"
        "   AND ($1::bigint IS NULL OR l.contract_id = $1::bigint)",
        1, NULL, &param, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fcctl_error("reading the current periods failed: %.*s",
                    (int) strcspn(PQerrorMessage(fc->pg), "\n"),
                    PQerrorMessage(fc->pg));
        PQclear(res);
        return -1;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        json_object_set_new_nocheck(fc->current, PQgetvalue(res, i, 0),
                                    json_true());
    }

    PQclear(res);

    return 0;
}


/*
 * Adds the keys matching pattern to fc->present, leaving out and
 * counting txn keys.  Returns 0, or -1 after printing why.
 */

static int
fcctl_scan(fcctl_t *fc, const char *pattern)
{
    char          cursor[32];
    size_t        i;
    const char   *argv[6];
    size_t        lens[6];
    redisReply   *r, *keys;

    strcpy(cursor, "0");

    do {
        argv[0] = "SCAN";
        argv[1] = cursor;
        argv[2] = "MATCH";
        argv[3] = pattern;
        argv[4] = "COUNT";
        argv[5] = FCCTL_SCAN_COUNT;

        for (i = 0; i < 6; i++) {
            lens[i] = strlen(argv[i]);
        }

        r = redisCommandArgv(fc->redis, 6, argv, lens);

        if (fcctl_redis_check(fc, r, "SCAN") != 0) {
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[0]->type != REDIS_REPLY_STRING
            || r->element[0]->len >= sizeof(cursor)
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            fcctl_error("redis: unexpected reply to SCAN");
            freeReplyObject(r);
            return -1;
        }

        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        keys = r->element[1];

        for (i = 0; i < keys->elements; i++) {
            if (keys->element[i]->type != REDIS_REPLY_STRING
                || strlen(keys->element[i]->str) != keys->element[i]->len)
            {
                continue;
            }

            if (fcctl_key_is(keys->element[i]->str, "txn:")) {
                fc->txn_keys++;
                continue;
            }

            json_object_set_new_nocheck(fc->present, keys->element[i]->str,
                                        json_true());
        }

        freeReplyObject(r);

    } while (strcmp(cursor, "0") != 0);

    return 0;
}


/*
 * Reads the type and value of every key found by SCAN or expected into
 * fc->actual, in pipelined batches.  Returns 0, or -1 after printing
 * why.
 */

static int
fcctl_fetch(fcctl_t *fc)
{
    int           rc;
    size_t        n, i, len;
    const char  **keys;

    keys = fcctl_sorted_keys(fc->present, fc->expected, &n);

    if (keys == NULL && n != 0) {
        fcctl_error("out of memory");
        return -1;
    }

    rc = 0;

    for (i = 0; i < n; i += len) {
        len = n - i < FCCTL_BATCH ? n - i : FCCTL_BATCH;

        if (fcctl_fetch_batch(fc, keys + i, len) != 0) {
            rc = -1;
            break;
        }
    }

    free(keys);

    return rc;
}


static int
fcctl_fetch_batch(fcctl_t *fc, const char **keys, size_t n)
{
    int           rc;
    char        (*types)[16];
    size_t        i;
    json_t       *v;
    redisReply   *r;

    types = calloc(n, sizeof(*types));

    if (types == NULL) {
        fcctl_error("out of memory");
        return -1;
    }

    rc = -1;

    for (i = 0; i < n; i++) {
        if (fcctl_send(fc, "TYPE", keys[i]) != 0) {
            goto done;
        }
    }

    for (i = 0; i < n; i++) {
        fc->pending--;

        if (redisGetReply(fc->redis, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (fcctl_redis_check(fc, r, "TYPE") != 0) {
            goto done;
        }

        snprintf(types[i], sizeof(types[i]), "%s",
                 r->type == REDIS_REPLY_STATUS ? r->str : "?");
        freeReplyObject(r);
    }

    /* the values of the types that are ours; any other is moot */

    for (i = 0; i < n; i++) {
        if (strcmp(types[i], "string") == 0) {
            rc = fcctl_send(fc, "GET", keys[i]);

        } else if (strcmp(types[i], "hash") == 0) {
            rc = fcctl_send(fc, "HGETALL", keys[i]);

        } else if (strcmp(types[i], "zset") == 0) {
            rc = fcctl_send3(fc, "ZRANGE", keys[i], "0 -1 WITHSCORES");

        } else {
            continue;
        }

        if (rc != 0) {
            goto done;
        }
    }

    rc = -1;

    for (i = 0; i < n; i++) {
        if (strcmp(types[i], "none") == 0) {
            continue;
        }

        if (strcmp(types[i], "string") != 0 && strcmp(types[i], "hash") != 0
            && strcmp(types[i], "zset") != 0)
        {
            json_object_set_new_nocheck(fc->actual, keys[i],
                json_pack("{s:s, s:n}", "t", types[i], "v"));
            continue;
        }

        fc->pending--;

        if (redisGetReply(fc->redis, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (fcctl_redis_check(fc, r, types[i]) != 0) {
            goto done;
        }

        v = fcctl_reply_value(types[i], r);
        freeReplyObject(r);

        /* NULL: the key went away between TYPE and reading it */

        if (v != NULL) {
            json_object_set_new_nocheck(fc->actual, keys[i],
                json_pack("{s:s, s:o}", "t", types[i], "v", v));
        }
    }

    rc = 0;

done:

    free(types);

    return rc;
}


/* a reply in the comparison's form (see fcctl_expected_add()) */

static json_t *
fcctl_reply_value(const char *type, redisReply *r)
{
    size_t   i;
    json_t  *v;

    if (strcmp(type, "string") == 0) {
        if (r->type != REDIS_REPLY_STRING) {
            return NULL;
        }

        return json_stringn_nocheck(r->str, r->len);
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0
        || r->elements == 0)
    {
        return NULL;
    }

    v = json_object();

    for (i = 0; i < r->elements; i += 2) {
        if (r->element[i]->type != REDIS_REPLY_STRING
            || r->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        if (strcmp(type, "zset") == 0) {
            json_object_set_new_nocheck(v, r->element[i]->str,
                json_real(strtod(r->element[i + 1]->str, NULL)));

        } else {
            json_object_set_new_nocheck(v, r->element[i]->str,
                json_stringn_nocheck(r->element[i + 1]->str,
                                     r->element[i + 1]->len));
        }
    }

    return v;
}


/*
 * compare: prints one line per difference, then their number.  Returns
 * FCCTL_OK, FCCTL_DIFFERENT or FCCTL_FAILED.
 */

static int
fcctl_compare(fcctl_t *fc)
{
    size_t        n, i;
    const char  **keys;

    if (fcctl_load_expected(fc) != 0 || fcctl_load_current(fc) != 0) {
        return FCCTL_FAILED;
    }

    if (fc->contract) {
        char  pattern[48];

        snprintf(pattern, sizeof(pattern), "{c:%s}:*", fc->contract_text);

        if (fcctl_scan(fc, pattern) != 0) {
            return FCCTL_FAILED;
        }

    } else if (fcctl_scan(fc, "{c:*}:*") != 0
               || fcctl_scan(fc, "{fc}:*") != 0)
    {
        return FCCTL_FAILED;
    }

    if (fcctl_fetch(fc) != 0) {
        return FCCTL_FAILED;
    }

    keys = fcctl_sorted_keys(fc->expected, fc->actual, &n);

    if (keys == NULL && n != 0) {
        fcctl_error("out of memory");
        return FCCTL_FAILED;
    }

    for (i = 0; i < n; i++) {
        fcctl_compare_key(fc, keys[i], json_object_get(fc->expected, keys[i]),
                          json_object_get(fc->actual, keys[i]));
    }

    free(keys);

    printf("%u differences\n", fc->differences);
    fflush(stdout);

    return fc->differences ? FCCTL_DIFFERENT : FCCTL_OK;
}


static void
fcctl_compare_key(fcctl_t *fc, const char *key, json_t *exp, json_t *act)
{
    char          q1[256], q2[256];
    double        s1, s2;
    json_t       *ev, *av, *v;
    const char   *et, *at, *field;

    if (exp == NULL) {
        at = json_string_value(json_object_get(act, "t"));
        av = json_object_get(act, "v");

        if (fcctl_key_is(key, "use:")) {
            /* a counter of an ended period, or 0 in this one */
            if (json_object_get(fc->current, key) == NULL
                || (json_is_string(av)
                    && strcmp(json_string_value(av), "0") == 0))
            {
                return;
            }
        }

        fcctl_diff(fc, "extra key %s (%s)", key, at);
        return;
    }

    et = json_string_value(json_object_get(exp, "t"));
    ev = json_object_get(exp, "v");

    if (act == NULL) {
        fcctl_diff(fc, "missing key %s (%s)", key, et);
        return;
    }

    at = json_string_value(json_object_get(act, "t"));
    av = json_object_get(act, "v");

    if (strcmp(et, at) != 0) {
        fcctl_diff(fc, "wrong type %s: redis has a %s, postgresql implies "
                   "a %s", key, at, et);
        return;
    }

    if (strcmp(et, "string") == 0) {
        if (!fcctl_same_text(key, NULL, json_string_value(av),
                             json_string_value(ev)))
        {
            fcctl_quote(json_string_value(av), q1, sizeof(q1));
            fcctl_quote(json_string_value(ev), q2, sizeof(q2));
            fcctl_diff(fc, "different value %s: redis %s, postgresql %s",
                       key, q1, q2);
        }

        return;
    }

    if (strcmp(et, "hash") == 0) {
        json_object_foreach(ev, field, v) {
            json_t  *a = json_object_get(av, field);

            fcctl_quote(json_string_value(v), q2, sizeof(q2));

            if (a == NULL) {
                fcctl_diff(fc, "missing field %s %s: postgresql %s", key,
                           field, q2);

            } else if (!fcctl_same_text(key, field, json_string_value(a),
                                        json_string_value(v)))
            {
                fcctl_quote(json_string_value(a), q1, sizeof(q1));
                fcctl_diff(fc, "different field %s %s: redis %s, "
                           "postgresql %s", key, field, q1, q2);
            }
        }

        json_object_foreach(av, field, v) {
            if (json_object_get(ev, field) == NULL) {
                fcctl_quote(json_string_value(v), q1, sizeof(q1));
                fcctl_diff(fc, "extra field %s %s: redis %s", key, field, q1);
            }
        }

        return;
    }

    /* zset */

    json_object_foreach(ev, field, v) {
        json_t  *a = json_object_get(av, field);

        s2 = json_real_value(v);

        if (a == NULL) {
            fcctl_diff(fc, "missing member %s %s: postgresql score %.17g",
                       key, field, s2);
            continue;
        }

        s1 = json_real_value(a);

        if (s1 - s2 > FCCTL_EXP_SLACK || s2 - s1 > FCCTL_EXP_SLACK) {
            fcctl_diff(fc, "different score %s %s: redis %.17g, "
                       "postgresql %.17g", key, field, s1, s2);
        }
    }

    json_object_foreach(av, field, v) {
        if (json_object_get(ev, field) == NULL) {
            fcctl_diff(fc, "extra member %s %s: redis score %.17g", key,
                       field, json_real_value(v));
        }
    }
}


/*
 * 1 if two values of a key (and hash field) say the same: the same
 * bytes, the same JSON document however its keys are ordered or spaced
 * (a hold's usage is written by Lua and by PostgreSQL), or the same hold
 * expiry within FCCTL_EXP_SLACK.
 */

static int
fcctl_same_text(const char *key, const char *field, const char *a,
    const char *b)
{
    int            same;
    int64_t        x, y;
    json_t        *ja, *jb;
    json_error_t   err;

    if (strcmp(a, b) == 0) {
        return 1;
    }

    if (field && strcmp(field, "exp") == 0 && fcctl_key_is(key, "hold:")
        && fcctl_parse_i64(a, INT64_MIN + 1, INT64_MAX, &x) == 0
        && fcctl_parse_i64(b, INT64_MIN + 1, INT64_MAX, &y) == 0)
    {
        return x - y <= FCCTL_EXP_SLACK && y - x <= FCCTL_EXP_SLACK;
    }

    if ((a[0] != '{' && a[0] != '[') || (b[0] != '{' && b[0] != '[')) {
        return 0;
    }

    ja = json_loads(a, 0, &err);
    jb = json_loads(b, 0, &err);

    same = ja && jb && json_equal(ja, jb);

    json_decref(ja);
    json_decref(jb);

    return same;
}


static void
fcctl_diff(fcctl_t *fc, const char *fmt, ...)
{
    va_list  args;

    fc->differences++;

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    putchar('\n');
}


/* s in double quotes, escaped, cut to fit buf */

static void
fcctl_quote(const char *s, char *buf, size_t size)
{
    size_t          n;
    unsigned char   c;

    n = 0;
    buf[n++] = '"';

    for ( /* void */ ; *s && n + 8 < size; s++) {
        c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char) c;

        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t) snprintf(buf + n, size - n, "\\x%02x", c);

        } else {
            buf[n++] = (char) c;
        }
    }

    if (*s) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }

    buf[n++] = '"';
    buf[n] = '\0';
}


/*
 * rebuild.
 *
 * Rebuilding makes each hash tag's keys what PostgreSQL implies in one
 * MULTI/EXEC: the keys that must not be there are deleted, hashes and
 * zsets are deleted and written whole, strings are set, counters with
 * the 400 days an authorization gives them and hold hashes with their
 * expiry plus a day, as authorize.lua writes them.  The {fc} look-ups
 * belong to every contract, so a rebuild of one contract writes its
 * cards' pan keys over and deletes none.
 *
 * Against a live platform a rebuild races with authorizations, which
 * change the counters, holds and balance of a contract between the
 * moment PostgreSQL is read and the moment Redis is written.
 *
 * A rebuild of one contract guards against that: it WATCHes the
 * contract's ctr hash and holds zset (every approval, release and
 * settlement writes one of them), then reads PostgreSQL, scans and
 * writes; if anything touched the contract meanwhile, EXEC fails and
 * the contract is read and written again, up to FCCTL_REBUILD_TRIES
 * times.  What remains is a hold placed in Redis whose record is not
 * yet committed when PostgreSQL is read: nginx commits it within
 * milliseconds, so the window is small but not closed.
 *
 * A full rebuild writes every contract and the {fc} look-ups, each tag
 * in its own MULTI/EXEC, pipelined, without that guard: run it on a
 * quiet system (nginx not serving terminals), or rebuild one contract
 * at a time.
 */

static int
fcctl_rebuild(fcctl_t *fc)
{
    int           try;
    char          pattern[48], ctr[64], holds[64];
    const char   *argv[3];
    size_t        lens[3];
    redisReply   *r;

    if (fc->contract == 0) {
        if (fcctl_load_expected(fc) != 0
            || fcctl_scan(fc, "{c:*}:*") != 0
            || fcctl_scan(fc, "{fc}:*") != 0
            || fcctl_write_groups(fc) != 0
            || fcctl_drain(fc) != 0)
        {
            return FCCTL_FAILED;
        }

        printf("rebuild: all contracts: %u keys written, %u deleted, "
               "%u txn keys kept\n", fc->written, fc->deleted, fc->txn_keys);

        return FCCTL_OK;
    }

    snprintf(pattern, sizeof(pattern), "{c:%s}:*", fc->contract_text);
    snprintf(ctr, sizeof(ctr), "{c:%s}:ctr", fc->contract_text);
    snprintf(holds, sizeof(holds), "{c:%s}:holds", fc->contract_text);

    argv[0] = "WATCH";
    argv[1] = ctr;
    argv[2] = holds;
    lens[0] = 5;
    lens[1] = strlen(ctr);
    lens[2] = strlen(holds);

    for (try = 1; try <= FCCTL_REBUILD_TRIES; try++) {
        fc->written = 0;
        fc->deleted = 0;
        fc->txn_keys = 0;
        fc->aborted = 0;
        json_object_clear(fc->present);

        r = redisCommandArgv(fc->redis, 3, argv, lens);

        if (fcctl_redis_check(fc, r, "WATCH") != 0) {
            return FCCTL_FAILED;
        }

        freeReplyObject(r);

        if (fcctl_load_expected(fc) != 0
            || fcctl_scan(fc, pattern) != 0
            || fcctl_write_groups(fc) != 0
            || fcctl_drain(fc) != 0)
        {
            return FCCTL_FAILED;
        }

        if (!fc->aborted) {
            printf("rebuild: contract %s: %u keys written, %u deleted, "
                   "%u txn keys kept\n", fc->contract_text, fc->written,
                   fc->deleted, fc->txn_keys);

            return FCCTL_OK;
        }

        fprintf(stderr, "fcctl: contract %s changed while it was rebuilt, "
                "trying again\n", fc->contract_text);
    }

    fcctl_error("contract %s kept changing; try again when it is quieter",
                fc->contract_text);

    return FCCTL_FAILED;
}


/*
 * Queues one MULTI/EXEC per hash tag over the keys expected or present,
 * sorted, so that the keys of one tag come together.  Returns 0, or -1
 * after printing why.
 */

static int
fcctl_write_groups(fcctl_t *fc)
{
    int           rc;
    size_t        n, i, j, taglen;
    const char  **keys;

    keys = fcctl_sorted_keys(fc->expected, fc->present, &n);

    if (keys == NULL && n != 0) {
        fcctl_error("out of memory");
        return -1;
    }

    rc = 0;

    for (i = 0; i < n; i = j) {
        taglen = fcctl_key_tag(keys[i]);

        for (j = i + 1; j < n; j++) {
            if (fcctl_key_tag(keys[j]) != taglen
                || strncmp(keys[i], keys[j], taglen) != 0)
            {
                break;
            }
        }

        /* a key under no tag of ours is left alone */

        if (taglen == 0) {
            continue;
        }

        if (fcctl_write_group(fc, keys + i, j - i) != 0) {
            rc = -1;
            break;
        }

        if (fc->pending >= FCCTL_BATCH && fcctl_drain(fc) != 0) {
            rc = -1;
            break;
        }
    }

    free(keys);

    return rc;
}


/*
 * Queues the MULTI/EXEC of the keys of one tag: one DEL of those present
 * but not expected, then every expected key written.  Returns 0, or -1
 * after printing why.
 */

static int
fcctl_write_group(fcctl_t *fc, const char **keys, size_t n)
{
    int           keep;
    size_t        i, ndel;
    json_t       *entry;
    fcctl_cmd_t   cmd;

    keep = fc->contract != 0 && strncmp(keys[0], "{fc}:", 5) == 0;

    if (fcctl_send(fc, "MULTI", NULL) != 0) {
        return -1;
    }

    fcctl_cmd_init(&cmd);
    fcctl_cmd_add(&cmd, "DEL", 3);
    ndel = 0;

    for (i = 0; i < n && !keep; i++) {
        if (json_object_get(fc->expected, keys[i]) == NULL) {
            fcctl_cmd_add(&cmd, keys[i], strlen(keys[i]));
            ndel++;
        }
    }

    if (ndel == 0) {
        fcctl_cmd_free(&cmd);

    } else if (fcctl_cmd_send(fc, &cmd) != 0) {
        return -1;
    }

    fc->deleted += ndel;

    for (i = 0; i < n; i++) {
        entry = json_object_get(fc->expected, keys[i]);

        if (entry == NULL) {
            continue;
        }

        if (fcctl_write_key(fc, keys[i], entry) != 0) {
            return -1;
        }

        fc->written++;
    }

    return fcctl_send(fc, "EXEC", NULL);
}


/* queues the commands that write one key as entry describes */

static int
fcctl_write_key(fcctl_t *fc, const char *key, json_t *entry)
{
    int           hash;
    json_t       *v, *val, *exp;
    int64_t       t;
    const char   *type, *field;
    fcctl_cmd_t   cmd;

    type = json_string_value(json_object_get(entry, "t"));
    v = json_object_get(entry, "v");

    fcctl_cmd_init(&cmd);

    if (strcmp(type, "string") == 0) {
        fcctl_cmd_add(&cmd, "SET", 3);
        fcctl_cmd_add(&cmd, key, strlen(key));
        fcctl_cmd_add(&cmd, json_string_value(v), json_string_length(v));

        if (fcctl_key_is(key, "use:")) {
            fcctl_cmd_add(&cmd, "EX", 2);
            fcctl_cmd_add(&cmd, FCCTL_COUNTER_TTL,
                          sizeof(FCCTL_COUNTER_TTL) - 1);
        }

        return fcctl_cmd_send(fc, &cmd);
    }

    if (fcctl_send(fc, "DEL", key) != 0) {
        return -1;
    }

    if (json_object_size(v) == 0) {
        return 0;
    }

    hash = (strcmp(type, "hash") == 0);

    fcctl_cmd_add(&cmd, hash ? "HSET" : "ZADD", 4);
    fcctl_cmd_add(&cmd, key, strlen(key));

    json_object_foreach(v, field, val) {
        if (hash) {
            fcctl_cmd_add(&cmd, field, strlen(field));
            fcctl_cmd_add(&cmd, json_string_value(val),
                          json_string_length(val));

        } else {
            fcctl_cmd_addf(&cmd, "%.17g", json_real_value(val));
            fcctl_cmd_add(&cmd, field, strlen(field));
        }
    }

    if (fcctl_cmd_send(fc, &cmd) != 0) {
        return -1;
    }

    exp = json_object_get(v, "exp");

    if (hash && fcctl_key_is(key, "hold:") && json_is_string(exp)
        && fcctl_parse_i64(json_string_value(exp), 0, INT64_MAX / 2, &t) == 0)
    {
        fcctl_cmd_init(&cmd);
        fcctl_cmd_add(&cmd, "EXPIREAT", 8);
        fcctl_cmd_add(&cmd, key, strlen(key));
        fcctl_cmd_addf(&cmd, "%" PRId64, t + FCCTL_HOLD_GRACE);

        return fcctl_cmd_send(fc, &cmd);
    }

    return 0;
}


/*
 * Reads every reply queued.  An EXEC answered with nil (a WATCHed key
 * changed, so the transaction did nothing) sets fc->aborted.  Returns 0,
 * or -1 after printing the first error.
 */

static int
fcctl_drain(fcctl_t *fc)
{
    int          rc;
    size_t       i;
    redisReply  *r;

    rc = 0;

    while (fc->pending > 0) {
        fc->pending--;

        if (redisGetReply(fc->redis, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (r == NULL) {
            fcctl_error("redis: %s", fc->redis->errstr);
            fc->pending = 0;
            return -1;
        }

        if (r->type == REDIS_REPLY_NIL) {
            fc->aborted = 1;
        }

        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            fcctl_error("redis: %s", r->str);
            rc = -1;
        }

        if (r->type == REDIS_REPLY_ARRAY) {
            for (i = 0; i < r->elements; i++) {
                if (r->element[i]->type == REDIS_REPLY_ERROR && rc == 0) {
                    fcctl_error("redis: %s", r->element[i]->str);
                    rc = -1;
                }
            }
        }

        freeReplyObject(r);
    }

    return rc;
}


/* 0 if r is a reply that is no error; else frees it and prints why */

static int
fcctl_redis_check(fcctl_t *fc, redisReply *r, const char *what)
{
    if (r == NULL) {
        fcctl_error("redis: %s failed: %s", what, fc->redis->errstr);
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        fcctl_error("redis: %s failed: %s", what, r->str);
        freeReplyObject(r);
        return -1;
    }

    return 0;
}


static void
fcctl_cmd_init(fcctl_cmd_t *cmd)
{
    memset(cmd, 0, sizeof(fcctl_cmd_t));
}


/*
 * Appends a copy of s.  Out of memory marks the command failed, so that
 * a run of additions needs one check, at fcctl_cmd_send().
 */

static void
fcctl_cmd_add(fcctl_cmd_t *cmd, const char *s, size_t len)
{
    int      n;
    char    *copy, **argv;
    size_t  *lens;

    if (cmd->failed) {
        return;
    }

    if (cmd->argc == cmd->nalloc) {
        n = cmd->nalloc ? cmd->nalloc * 2 : 8;
        argv = realloc(cmd->argv, (size_t) n * sizeof(char *));

        if (argv == NULL) {
            cmd->failed = 1;
            return;
        }

        cmd->argv = argv;
        lens = realloc(cmd->lens, (size_t) n * sizeof(size_t));

        if (lens == NULL) {
            cmd->failed = 1;
            return;
        }

        cmd->lens = lens;
        cmd->nalloc = n;
    }

    copy = malloc(len + 1);

    if (copy == NULL) {
        cmd->failed = 1;
        return;
    }

    memcpy(copy, s, len);
    copy[len] = '\0';

    cmd->argv[cmd->argc] = copy;
    cmd->lens[cmd->argc] = len;
    cmd->argc++;
}


static void
fcctl_cmd_addf(fcctl_cmd_t *cmd, const char *fmt, ...)
{
    int      n;
    char     buf[64];
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);

    if (n < 0 || (size_t) n >= sizeof(buf)) {
        cmd->failed = 1;
        return;
    }

    fcctl_cmd_add(cmd, buf, (size_t) n);
}


/* queues the command and frees it; 0, or -1 after printing why */

static int
fcctl_cmd_send(fcctl_t *fc, fcctl_cmd_t *cmd)
{
    int  rc;

    if (cmd->failed || cmd->argc == 0) {
        fcctl_error("out of memory");
        fcctl_cmd_free(cmd);
        return -1;
    }

    rc = redisAppendCommandArgv(fc->redis, cmd->argc,
                                (const char **) cmd->argv, cmd->lens);
    fcctl_cmd_free(cmd);

    if (rc != REDIS_OK) {
        fcctl_error("redis: %s", fc->redis->errstr);
        return -1;
    }

    fc->pending++;

    return 0;
}


static void
fcctl_cmd_free(fcctl_cmd_t *cmd)
{
    int  i;

    for (i = 0; i < cmd->argc; i++) {
        free(cmd->argv[i]);
    }

    free(cmd->argv);
    free(cmd->lens);
    memset(cmd, 0, sizeof(fcctl_cmd_t));
}


/* queues a command of one or two words */

static int
fcctl_send(fcctl_t *fc, const char *a, const char *b)
{
    const char  *argv[2];
    size_t       lens[2];

    argv[0] = a;
    lens[0] = strlen(a);
    argv[1] = b;
    lens[1] = b ? strlen(b) : 0;

    if (redisAppendCommandArgv(fc->redis, b ? 2 : 1, argv, lens)
        != REDIS_OK)
    {
        fcctl_error("redis: %s", fc->redis->errstr);
        return -1;
    }

    fc->pending++;

    return 0;
}


/* queues a command, its key, and the blank-separated words of tail */

static int
fcctl_send3(fcctl_t *fc, const char *cmd, const char *key,
    const char *tail)
{
    size_t        n;
    const char   *p;
    fcctl_cmd_t   c;

    fcctl_cmd_init(&c);
    fcctl_cmd_add(&c, cmd, strlen(cmd));
    fcctl_cmd_add(&c, key, strlen(key));

    for (p = tail; *p; p += n) {
        p += strspn(p, " ");
        n = strcspn(p, " ");

        if (n > 0) {
            fcctl_cmd_add(&c, p, n);
        }
    }

    return fcctl_cmd_send(fc, &c);
}


/* the length of the key's leading hash tag "{c:<digits>}" or "{fc}" */

static size_t
fcctl_key_tag(const char *key)
{
    size_t  n;

    if (strncmp(key, "{fc}:", 5) == 0) {
        return 4;
    }

    if (strncmp(key, "{c:", 3) != 0) {
        return 0;
    }

    n = strspn(key + 3, "0123456789");

    if (n == 0 || key[3 + n] != '}' || key[4 + n] != ':') {
        return 0;
    }

    return n + 4;
}


/* what follows "{c:<id>}:", or NULL for any other key */

static const char *
fcctl_key_rest(const char *key)
{
    size_t  n;

    n = fcctl_key_tag(key);

    if (n == 0 || key[1] != 'c') {
        return NULL;
    }

    return key + n + 1;
}


/* 1 if key is a contract key whose name goes on with what ("txn:") */

static int
fcctl_key_is(const char *key, const char *what)
{
    const char  *rest;

    rest = fcctl_key_rest(key);

    return rest != NULL && strncmp(rest, what, strlen(what)) == 0;
}


static int
fcctl_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}


/*
 * The keys of both objects, each once, sorted; the strings belong to
 * the objects.  The array is to be freed; NULL when empty or out of
 * memory (*n tells which).
 */

static const char **
fcctl_sorted_keys(json_t *a, json_t *b, size_t *n)
{
    size_t        i;
    json_t       *v;
    const char   *key;
    const char  **keys;

    *n = json_object_size(a) + json_object_size(b);

    if (*n == 0) {
        return NULL;
    }

    keys = malloc(*n * sizeof(char *));

    if (keys == NULL) {
        return NULL;
    }

    i = 0;

    json_object_foreach(a, key, v) {
        keys[i++] = key;
    }

    json_object_foreach(b, key, v) {
        if (json_object_get(a, key) == NULL) {
            keys[i++] = key;
        }
    }

    qsort(keys, i, sizeof(char *), fcctl_key_cmp);
    *n = i;

    return keys;
}


/* 0 and *out if s is a whole decimal number within [min, max] */

static int
fcctl_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char       *end;
    long long   v;

    if (*s == '\0' || (*s != '-' && (*s < '0' || *s > '9'))) {
        return -1;
    }

    errno = 0;
    v = strtoll(s, &end, 10);

    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }

    *out = v;

    return 0;
}


static void
fcctl_error(const char *fmt, ...)
{
    va_list  args;

    fputs("fcctl: ", stderr);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);
}

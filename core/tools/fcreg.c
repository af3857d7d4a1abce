/*
 * fcreg: imports the acquiring bank's daily registry files, for cron.
 *
 *     fcreg -c <fcd.conf> [-b bank] [-n name] [-d YYYY-MM-DD]
 *           [-r registry_id] [-j] file...
 *
 * Each file is sent as it is, bytes and all, to the SQL function
 * fc_registry_import() that the back office's upload route calls too
 * (docs/reconciliation.md): one reader of registry files, whichever way
 * they come.  It detects the encoding, reads the lines, matches them to
 * our payments and answers with a JSON summary, which fcreg prints as a
 * few lines (or as it is, with -j).  The same file again changes
 * nothing, so a cron job may offer every file it finds each time.
 *
 * fcreg logs in to PostgreSQL as fcd's configuration file says, read
 * with fcd's own reader.  Each file is imported in a transaction of its
 * own; a file that fails does not stop the others.
 *
 * Exit status: 0 when every file was imported (or had been) and nothing
 * in them needs a person; 1 when some registry has differences, lines
 * that could not be read, a summary that disagrees, or a conflict with
 * another file of its day; 2 when some file could not be imported at
 * all, or on a bad command line or configuration.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "fc_money.h"
#include "fcd_conf.h"


#define FCREG_OK                 0
#define FCREG_ATTENTION          1
#define FCREG_FAILED             2

#define FCREG_CONNECT_TIMEOUT    5                  /* seconds */

/* the route takes 20 MiB; a file from elsewhere may be a little larger */
#define FCREG_MAX_SIZE           (64 * 1024 * 1024)  /* bytes */

#define FCREG_BANK_LEN           32
#define FCREG_NAME_LEN           255


typedef struct {
    const char       *conf_path;
    const char       *bank;
    const char       *name;          /* as the registry is to be called */
    const char       *day;           /* YYYY-MM-DD or NULL */
    const char       *replace;       /* a registry id or NULL */
    int               json;
    fcd_conf_t        conf;
    PGconn           *pg;
} fcreg_t;


static void fcreg_usage(FILE *out);
static int fcreg_check_args(fcreg_t *fr);
static int fcreg_pg_connect(fcreg_t *fr);
static int fcreg_import(fcreg_t *fr, const char *path);
static int fcreg_read(const char *path, char **data, size_t *len);
static int fcreg_report(fcreg_t *fr, const char *path, const char *text);
static const char *fcreg_str(json_t *obj, const char *key);
static long long fcreg_int(json_t *obj, const char *path);
static const char *fcreg_money(json_t *v, char *buf, size_t size);
static const char *fcreg_basename(const char *path);
static void fcreg_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


int
main(int argc, char **argv)
{
    int          opt, rc, one;
    char         err[FCD_ERR_LEN];
    fcreg_t      fr;

    memset(&fr, 0, sizeof(fcreg_t));
    fr.bank = "tbank";

    while ((opt = getopt(argc, argv, "c:b:n:d:r:jh")) != -1) {
        switch (opt) {
        case 'c':
            fr.conf_path = optarg;
            break;
        case 'b':
            fr.bank = optarg;
            break;
        case 'n':
            fr.name = optarg;
            break;
        case 'd':
            fr.day = optarg;
            break;
        case 'r':
            fr.replace = optarg;
            break;
        case 'j':
            fr.json = 1;
            break;
        case 'h':
            fcreg_usage(stdout);
            return FCREG_OK;
        default:
            fcreg_usage(stderr);
            return FCREG_FAILED;
        }
    }

    if (fr.conf_path == NULL || optind >= argc) {
        fcreg_usage(stderr);
        return FCREG_FAILED;
    }

    if (fcreg_check_args(&fr) != 0) {
        return FCREG_FAILED;
    }

    if ((fr.name || fr.replace) && argc - optind > 1) {
        fcreg_error("-n and -r apply to one file, got %d files",
                    argc - optind);
        return FCREG_FAILED;
    }

    if (fcd_conf_load(fr.conf_path, &fr.conf, err, sizeof(err)) != 0) {
        fcreg_error("%s", err);
        return FCREG_FAILED;
    }

    rc = fcreg_pg_connect(&fr);

    /* the password served its purpose */
    fcd_conf_clear(&fr.conf);

    if (rc != 0) {
        return FCREG_FAILED;
    }

    rc = FCREG_OK;

    for ( /* void */ ; optind < argc; optind++) {
        one = fcreg_import(&fr, argv[optind]);
        if (one > rc) {
            rc = one;
        }
    }

    PQfinish(fr.pg);

    return rc;
}


static void
fcreg_usage(FILE *out)
{
    fprintf(out,
        "usage: fcreg -c <fcd.conf> [-b bank] [-n name] [-d YYYY-MM-DD]\n"
        "             [-r registry_id] [-j] file...\n"
        "\n"
        "Imports the bank's registry files and reconciles them with our\n"
        "payments (docs/reconciliation.md).\n"
        "\n"
        "  -b bank   the registry profile (default tbank)\n"
        "  -n name   the name to keep for the file (default: its own)\n"
        "  -d day    the day of its operations, when the file cannot\n"
        "            tell (no operation lines, no date in its name)\n"
        "  -r id     take the place of registry id, the reconciled\n"
        "            registry of the same day\n"
        "  -j        print the import's JSON answer as it is\n"
        "\n"
        "Exit status: 0 all imported and nothing needs a person, 1 some\n"
        "registry needs a person, 2 some file could not be imported.\n");
}


/*
 * Checks the command line values the database would refuse anyway, so
 * that a typo in a crontab gets a plain message.  Returns 0 or -1.
 */
static int
fcreg_check_args(fcreg_t *fr)
{
    size_t       i, len;
    char        *end;
    long long    id;

    len = strlen(fr->bank);

    if (len == 0 || len > FCREG_BANK_LEN
        || strspn(fr->bank, "abcdefghijklmnopqrstuvwxyz0123456789_") != len)
    {
        fcreg_error("-b: a profile name is 1 to %d of a-z, 0-9 and _, "
                    "got \"%s\"", FCREG_BANK_LEN, fr->bank);
        return -1;
    }

    if (fr->name && (fr->name[0] == '\0'
                     || strlen(fr->name) > FCREG_NAME_LEN))
    {
        fcreg_error("-n: a name is 1 to %d bytes", FCREG_NAME_LEN);
        return -1;
    }

    if (fr->day) {
        for (i = 0; fr->day[i] != '\0'; i++) {
            if ((i == 4 || i == 7) ? fr->day[i] != '-'
                                   : (fr->day[i] < '0' || fr->day[i] > '9'))
            {
                break;
            }
        }

        if (i != 10 || fr->day[i] != '\0') {
            fcreg_error("-d: a day is YYYY-MM-DD, got \"%s\"", fr->day);
            return -1;
        }
    }

    if (fr->replace) {
        errno = 0;
        id = strtoll(fr->replace, &end, 10);

        if (errno != 0 || *end != '\0' || end == fr->replace || id < 1
            || fr->replace[0] == '+' || fr->replace[0] == ' ')
        {
            fcreg_error("-r: a registry id is a positive whole number, "
                        "got \"%s\"", fr->replace);
            return -1;
        }
    }

    return 0;
}


static int
fcreg_pg_connect(fcreg_t *fr)
{
    int            i;
    char           port[16], timeout[16];
    const char    *keys[8], *values[8], *msg;
    fcd_conf_t    *conf;

    conf = &fr->conf;
    i = 0;

    snprintf(port, sizeof(port), "%d", conf->pg_port);

    /* hostaddr: a numeric address is used as it is, never resolved */
    keys[i] = conf->pg_host_is_addr ? "hostaddr" : "host";
    values[i++] = conf->pg_host;
    keys[i] = "port";               values[i++] = port;
    keys[i] = "dbname";             values[i++] = conf->pg_dbname;
    keys[i] = "user";               values[i++] = conf->pg_user;
    keys[i] = "application_name";   values[i++] = "fcreg";

    snprintf(timeout, sizeof(timeout), "%d", FCREG_CONNECT_TIMEOUT);
    keys[i] = "connect_timeout";    values[i++] = timeout;

    if (conf->pg_password[0] != '\0') {
        keys[i] = "password";       values[i++] = conf->pg_password;
    }

    keys[i] = NULL;
    values[i] = NULL;

    fr->pg = PQconnectdbParams(keys, values, 0);

    if (fr->pg == NULL || PQstatus(fr->pg) != CONNECTION_OK) {
        msg = fr->pg ? PQerrorMessage(fr->pg) : "out of memory\n";
        fcreg_error("cannot connect to postgresql at %s port %s as %s: %.*s",
                    conf->pg_host, port, conf->pg_user,
                    (int) strcspn(msg, "\n"), msg);

        if (fr->pg) {
            PQfinish(fr->pg);
            fr->pg = NULL;
        }

        return -1;
    }

    return 0;
}


/*
 * Imports one file.  The bytes go as a binary parameter, so that no
 * encoding is assumed on the way.  Returns FCREG_OK, FCREG_ATTENTION or
 * FCREG_FAILED for this file.
 */
static int
fcreg_import(fcreg_t *fr, const char *path)
{
    int            rc, formats[5], lengths[5];
    char          *data;
    size_t         len;
    PGresult      *res;
    const char    *values[5], *name, *msg;

    static const char  *sql =
        "SELECT fc_registry_import($1::bytea, $2, $3,"
        " replace => $4::bigint, day => $5::date, source => 'fcreg')";

    if (fcreg_read(path, &data, &len) != 0) {
        return FCREG_FAILED;
    }

    name = fr->name ? fr->name : fcreg_basename(path);

    /* the file in binary, the rest as text (NULL: not given) */
    memset(lengths, 0, sizeof(lengths));
    memset(formats, 0, sizeof(formats));

    values[0] = data;
    lengths[0] = (int) len;
    formats[0] = 1;

    values[1] = fr->bank;
    values[2] = name;
    values[3] = fr->replace;
    values[4] = fr->day;

    res = PQexecParams(fr->pg, sql, 5, NULL, values, lengths, formats, 0);

    free(data);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
    {
        msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        if (msg == NULL) {
            msg = PQerrorMessage(fr->pg);
        }

        fcreg_error("%s: not imported: %.*s", path,
                    (int) strcspn(msg, "\n"), msg);
        PQclear(res);

        /* a lost connection fails every file after it, each saying so */
        if (PQstatus(fr->pg) != CONNECTION_OK) {
            PQreset(fr->pg);
        }

        return FCREG_FAILED;
    }

    if (fr->json) {
        printf("%s\n", PQgetvalue(res, 0, 0));
        fflush(stdout);
    }

    rc = fcreg_report(fr, path, PQgetvalue(res, 0, 0));

    PQclear(res);

    return rc;
}


/*
 * Reads the whole file at path into a buffer of its own (*data, to be
 * freed).  Returns 0, or -1 after saying why.
 */
static int
fcreg_read(const char *path, char **data, size_t *len)
{
    FILE         *f;
    char         *buf;
    size_t        n;
    struct stat   st;

    f = fopen(path, "rb");
    if (f == NULL) {
        fcreg_error("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }

    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fcreg_error("%s: not a regular file", path);
        fclose(f);
        return -1;
    }

    if (st.st_size == 0 || st.st_size > FCREG_MAX_SIZE) {
        fcreg_error("%s: %lld bytes; a registry is 1 byte to %d MiB", path,
                    (long long) st.st_size, FCREG_MAX_SIZE / 1024 / 1024);
        fclose(f);
        return -1;
    }

    buf = malloc((size_t) st.st_size);
    if (buf == NULL) {
        fcreg_error("%s: out of memory", path);
        fclose(f);
        return -1;
    }

    n = fread(buf, 1, (size_t) st.st_size, f);

    if (n != (size_t) st.st_size || ferror(f)) {
        fcreg_error("%s: read %zu of %lld bytes", path, n,
                    (long long) st.st_size);
        free(buf);
        fclose(f);
        return -1;
    }

    fclose(f);

    *data = buf;
    *len = n;

    return 0;
}


/*
 * Prints what the import did, from its JSON answer: one line for the
 * registry, then one per problem a person must read.  Returns
 * FCREG_ATTENTION when there is anything for a person, else FCREG_OK.
 */
static int
fcreg_report(fcreg_t *fr, const char *path, const char *text)
{
    int            rc;
    char           net[FC_MONEY_STR_LEN];
    size_t         i;
    json_t        *doc, *problems, *v;
    json_error_t   jerr;
    long long      attention;

    doc = json_loads(text, 0, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        fcreg_error("%s: imported, but the answer is not JSON: %s", path,
                    jerr.text);
        json_decref(doc);
        return FCREG_FAILED;
    }

    attention = fcreg_int(doc, "reconciliation.needs_attention");
    problems = json_object_get(doc, "problems");

    if (!fr->json) {
        if (json_is_true(json_object_get(doc, "duplicate"))) {
            printf("%s: already imported as registry %lld on %s, nothing "
                   "changed\n", path, fcreg_int(doc, "id"),
                   fcreg_str(doc, "imported_at"));
        }

        printf("%s: registry %lld, %s %s, %s: %lld lines, %lld matched, "
               "%lld to look at; net payout %s RUB\n",
               path, fcreg_int(doc, "id"), fcreg_str(doc, "bank"),
               fcreg_str(doc, "date"), fcreg_str(doc, "status"),
               fcreg_int(doc, "lines"), fcreg_int(doc, "classes.matched"),
               attention,
               fcreg_money(json_object_get(json_object_get(doc, "totals"),
                                           "net_payout"),
                           net, sizeof(net)));

        json_array_foreach(problems, i, v) {
            if (json_is_string(v)) {
                printf("    %s\n", json_string_value(v));
            }
        }

        fflush(stdout);
    }

    rc = (attention > 0 || json_array_size(problems) > 0
          || strcmp(fcreg_str(doc, "status"), "conflict") == 0)
         ? FCREG_ATTENTION : FCREG_OK;

    json_decref(doc);

    return rc;
}


/* the string member key of obj, "-" when there is none */
static const char *
fcreg_str(json_t *obj, const char *key)
{
    json_t  *v;

    v = json_object_get(obj, key);

    return json_is_string(v) ? json_string_value(v) : "-";
}


/* the whole number at a dotted path of objects ("classes.matched"), 0 */
static long long
fcreg_int(json_t *obj, const char *path)
{
    char         key[64];
    size_t       n;
    const char  *dot;

    while ((dot = strchr(path, '.')) != NULL) {
        n = (size_t) (dot - path);
        if (n >= sizeof(key)) {
            return 0;
        }

        memcpy(key, path, n);
        key[n] = '\0';
        obj = json_object_get(obj, key);
        path = dot + 1;
    }

    obj = json_object_get(obj, path);

    return json_is_integer(obj) ? json_integer_value(obj) : 0;
}


/* kopecks as roubles; "?" for what is not a whole number that fits */
static const char *
fcreg_money(json_t *v, char *buf, size_t size)
{
    if (!json_is_integer(v)
        || fc_money_format(json_integer_value(v), buf, size) < 0)
    {
        return "?";
    }

    return buf;
}


static const char *
fcreg_basename(const char *path)
{
    const char  *slash;

    slash = strrchr(path, '/');

    return (slash && slash[1] != '\0') ? slash + 1 : path;
}


static void
fcreg_error(const char *fmt, ...)
{
    va_list  args;

    fputs("fcreg: ", stderr);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);
}

/*
 * fcd's configuration file.
 *
 * One setting a line, "key = value"; blank lines and lines whose first
 * non-blank character is '#' are ignored (a '#' later in a line is part
 * of the value, since paths may hold one).  Blanks around the key and the
 * value are dropped.  Each key may appear once, except vat, which adds
 * one entry to the VAT table per line.  Unknown keys are errors, so that
 * a misspelt setting is not silently ignored.
 *
 * The keys, like nginx directives, are a table of a name, a handler that
 * checks and stores the value, and where in fcd_conf_t it goes.
 *
 * fcctl links this file and reads the same configuration; nothing here
 * may depend on the rest of the daemon.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc_inn.h"
#include "fcd_conf.h"


#define FCD_CONF_REQUIRED  0x01
#define FCD_CONF_MULTI     0x02
/* the value names a file whose first line is a password, read into aux */
#define FCD_CONF_SECRET    0x04

#define FCD_CONF_MSG_LEN   512

/* where a string setting goes: its offset and size in fcd_conf_t */
#define fcd_conf_field(name)                                              \
    offsetof(fcd_conf_t, name), sizeof(((fcd_conf_t *) 0)->name)


typedef struct fcd_conf_key_s  fcd_conf_key_t;

typedef int (*fcd_conf_set_pt)(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);

struct fcd_conf_key_s {
    const char          *name;
    fcd_conf_set_pt      set;
    size_t               offset;
    size_t               size;
    unsigned             flags;
    size_t               aux;           /* a second field the key sets */
};


static int fcd_conf_set_str(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_host(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_port(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_msec(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_level(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_vat(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_url(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_count(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_inn(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_set_sno(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen);
static int fcd_conf_number(const char *value, size_t len, int64_t min,
    int64_t max, int64_t *n);
static int fcd_conf_read_password(fcd_conf_t *conf,
    const fcd_conf_key_t *key, char *msg, size_t msglen);


static const fcd_conf_key_t  fcd_conf_keys[] = {

    { "pg_host", fcd_conf_set_host, fcd_conf_field(pg_host),
      FCD_CONF_REQUIRED, offsetof(fcd_conf_t, pg_host_is_addr) },

    { "pg_port", fcd_conf_set_port, offsetof(fcd_conf_t, pg_port), 0, 0, 0 },

    { "pg_dbname", fcd_conf_set_str, fcd_conf_field(pg_dbname),
      FCD_CONF_REQUIRED, 0 },

    { "pg_user", fcd_conf_set_str, fcd_conf_field(pg_user),
      FCD_CONF_REQUIRED, 0 },

    { "pg_password_file", fcd_conf_set_str, fcd_conf_field(pg_password_file),
      FCD_CONF_SECRET, offsetof(fcd_conf_t, pg_password) },

    { "redis_host", fcd_conf_set_host, fcd_conf_field(redis_host),
      FCD_CONF_REQUIRED, offsetof(fcd_conf_t, redis_host_is_addr) },

    { "redis_port", fcd_conf_set_port, offsetof(fcd_conf_t, redis_port),
      0, 0, 0 },

    { "redis_password_file", fcd_conf_set_str,
      fcd_conf_field(redis_password_file),
      FCD_CONF_SECRET, offsetof(fcd_conf_t, redis_password) },

    { "release_script", fcd_conf_set_str, fcd_conf_field(release_script),
      FCD_CONF_REQUIRED, 0 },

    { "log_file", fcd_conf_set_str, fcd_conf_field(log_file), 0, 0 },

    { "log_level", fcd_conf_set_level, 0, 0, 0, 0 },

    { "pid_file", fcd_conf_set_str, fcd_conf_field(pid_file), 0, 0 },

    { "tick_interval_ms", fcd_conf_set_msec,
      offsetof(fcd_conf_t, tick_interval_ms), 0, 0, 0 },

    { "vat", fcd_conf_set_vat, 0, 0, FCD_CONF_MULTI, 0 },

    { "atol_url", fcd_conf_set_url, fcd_conf_field(atol_url), 0, 0 },

    { "atol_login", fcd_conf_set_str, fcd_conf_field(atol_login), 0, 0 },

    { "atol_password_file", fcd_conf_set_str,
      fcd_conf_field(atol_password_file),
      FCD_CONF_SECRET, offsetof(fcd_conf_t, atol_password) },

    { "atol_group", fcd_conf_set_str, fcd_conf_field(atol_group), 0, 0 },

    { "company_inn", fcd_conf_set_inn, fcd_conf_field(company_inn), 0, 0 },

    { "company_sno", fcd_conf_set_sno, fcd_conf_field(company_sno), 0, 0 },

    { "company_email", fcd_conf_set_str, fcd_conf_field(company_email),
      0, 0 },

    { "company_payment_address", fcd_conf_set_str,
      fcd_conf_field(company_payment_address), 0, 0 },

    { "report_poll_ms", fcd_conf_set_msec,
      offsetof(fcd_conf_t, report_poll_ms), 0, 0, 0 },

    { "report_poll_max", fcd_conf_set_count,
      offsetof(fcd_conf_t, report_poll_max), 0, 0, 0 },

    { "crm_url", fcd_conf_set_url, fcd_conf_field(crm_url), 0, 0 },

    { "onec_url", fcd_conf_set_url, fcd_conf_field(onec_url), 0, 0 },

    { "onec_user", fcd_conf_set_str, fcd_conf_field(onec_user), 0, 0 },

    { "onec_password_file", fcd_conf_set_str,
      fcd_conf_field(onec_password_file),
      FCD_CONF_SECRET, offsetof(fcd_conf_t, onec_password) },

    { "onec_document", fcd_conf_set_str, fcd_conf_field(onec_document),
      0, 0 },

    { "outbox_max_attempts", fcd_conf_set_count,
      offsetof(fcd_conf_t, outbox_max_attempts), 0, 0, 0 },

    { "outbox_backoff_ms", fcd_conf_set_msec,
      offsetof(fcd_conf_t, outbox_backoff_ms), 0, 0, 0 },

    { "outbox_backoff_max_ms", fcd_conf_set_msec,
      offsetof(fcd_conf_t, outbox_backoff_max_ms), 0, 0, 0 },
};

#define FCD_CONF_NKEYS  (sizeof(fcd_conf_keys) / sizeof(fcd_conf_keys[0]))


int
fcd_conf_load(const char *path, fcd_conf_t *conf, char *err, size_t errlen)
{
    int                    rc;
    char                  *line, *p, *end, *eq, *k, *kend;
    char                   msg[FCD_CONF_MSG_LEN];
    FILE                  *f;
    size_t                 cap, i;
    ssize_t                n;
    unsigned               lineno, seen[FCD_CONF_NKEYS];
    const fcd_conf_key_t  *key;

    memset(conf, 0, sizeof(fcd_conf_t));
    conf->pg_port = FCD_PG_PORT_DEFAULT;
    conf->redis_port = FCD_REDIS_PORT_DEFAULT;
    conf->log_level = FC_LOG_INFO;
    conf->tick_interval_ms = FCD_TICK_DEFAULT_MS;
    fc_vat_table_init(&conf->vat);
    conf->report_poll_ms = FCD_REPORT_POLL_MS;
    conf->report_poll_max = FCD_REPORT_POLL_MAX;
    conf->outbox_max_attempts = FCD_OUTBOX_MAX_ATTEMPTS;
    conf->outbox_backoff_ms = FCD_OUTBOX_BACKOFF_MS;
    conf->outbox_backoff_max_ms = FCD_OUTBOX_BACKOFF_MAX_MS;
    memcpy(conf->onec_document, FCD_ONEC_DOCUMENT_DEFAULT,
           sizeof(FCD_ONEC_DOCUMENT_DEFAULT));

    f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }

    memset(seen, 0, sizeof(seen));
    line = NULL;
    cap = 0;
    lineno = 0;
    rc = -1;

    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;

        p = line;
        end = line + n;

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (end > p && (end[-1] == '\n' || end[-1] == '\r'
                           || end[-1] == ' ' || end[-1] == '\t'))
        {
            end--;
        }

        if (p == end || *p == '#') {
            continue;
        }

        eq = memchr(p, '=', (size_t) (end - p));

        if (eq == NULL || eq == p) {
            snprintf(err, errlen, "%s:%u: expected \"key = value\"", path,
                     lineno);
            goto done;
        }

        k = p;
        kend = eq;

        while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t')) {
            kend--;
        }

        p = eq + 1;

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        key = NULL;

        for (i = 0; i < FCD_CONF_NKEYS; i++) {
            if (strlen(fcd_conf_keys[i].name) == (size_t) (kend - k)
                && memcmp(fcd_conf_keys[i].name, k, (size_t) (kend - k)) == 0)
            {
                key = &fcd_conf_keys[i];
                break;
            }
        }

        if (key == NULL) {
            snprintf(err, errlen, "%s:%u: unknown key \"%.*s\"", path,
                     lineno, (int) (kend - k < 64 ? kend - k : 64), k);
            goto done;
        }

        if (seen[i] && !(key->flags & FCD_CONF_MULTI)) {
            snprintf(err, errlen, "%s:%u: duplicate key \"%s\", first set "
                     "on line %u", path, lineno, key->name, seen[i]);
            goto done;
        }

        if (p == end) {
            snprintf(err, errlen, "%s:%u: key \"%s\" has no value", path,
                     lineno, key->name);
            goto done;
        }

        for (kend = p; kend < end; kend++) {
            if ((unsigned char) *kend < 0x20 && *kend != '\t') {
                snprintf(err, errlen, "%s:%u: control character in the "
                         "value of \"%s\"", path, lineno, key->name);
                goto done;
            }
        }

        if (key->set(conf, key, p, (size_t) (end - p), msg, sizeof(msg))
            != 0)
        {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
            goto done;
        }

        seen[i] = lineno;
    }

    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto done;
    }

    for (i = 0; i < FCD_CONF_NKEYS; i++) {
        if ((fcd_conf_keys[i].flags & FCD_CONF_REQUIRED) && !seen[i]) {
            snprintf(err, errlen, "%s: required key \"%s\" is missing",
                     path, fcd_conf_keys[i].name);
            goto done;
        }
    }

    if (conf->outbox_backoff_max_ms < conf->outbox_backoff_ms) {
        snprintf(err, errlen, "%s: outbox_backoff_max_ms %lld is less than "
                 "outbox_backoff_ms %lld", path,
                 (long long) conf->outbox_backoff_max_ms,
                 (long long) conf->outbox_backoff_ms);
        goto done;
    }

    /* only once the whole file is valid: a refused one reads no secret */
    for (i = 0; i < FCD_CONF_NKEYS; i++) {
        key = &fcd_conf_keys[i];

        if ((key->flags & FCD_CONF_SECRET) && seen[i]
            && fcd_conf_read_password(conf, key, msg, sizeof(msg)) != 0)
        {
            snprintf(err, errlen, "%s:%u: %s", path, seen[i], msg);
            goto done;
        }
    }

    rc = 0;

done:

    free(line);
    fclose(f);

    if (rc != 0) {
        fcd_conf_clear(conf);
    }

    return rc;
}


void
fcd_conf_clear(fcd_conf_t *conf)
{
    explicit_bzero(conf->pg_password, sizeof(conf->pg_password));
    explicit_bzero(conf->redis_password, sizeof(conf->redis_password));
    explicit_bzero(conf->atol_password, sizeof(conf->atol_password));
    explicit_bzero(conf->onec_password, sizeof(conf->onec_password));
}


int
fcd_conf_pg_changed(const fcd_conf_t *a, const fcd_conf_t *b)
{
    return strcmp(a->pg_host, b->pg_host) != 0
           || a->pg_port != b->pg_port
           || strcmp(a->pg_dbname, b->pg_dbname) != 0
           || strcmp(a->pg_user, b->pg_user) != 0
           || strcmp(a->pg_password, b->pg_password) != 0;
}


int
fcd_conf_redis_changed(const fcd_conf_t *a, const fcd_conf_t *b)
{
    return strcmp(a->redis_host, b->redis_host) != 0
           || a->redis_port != b->redis_port
           || strcmp(a->redis_password, b->redis_password) != 0;
}


int
fcd_conf_atol_changed(const fcd_conf_t *a, const fcd_conf_t *b)
{
    return strcmp(a->atol_url, b->atol_url) != 0
           || strcmp(a->atol_login, b->atol_login) != 0
           || strcmp(a->atol_password, b->atol_password) != 0;
}


static int
fcd_conf_set_str(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    char  *dst;

    if (len >= key->size) {
        snprintf(msg, msglen, "value of \"%s\" is longer than %zu bytes",
                 key->name, key->size - 1);
        return -1;
    }

    dst = (char *) conf + key->offset;
    memcpy(dst, value, len);
    dst[len] = '\0';

    return 0;
}


/*
 * A host is a numeric address, so that no name is ever resolved (libpq
 * gets it as hostaddr), or an absolute path: the directory of
 * PostgreSQL's socket, or Redis's socket itself.
 */

static int
fcd_conf_set_host(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    int            *is_addr;
    char           *host;
    unsigned char   addr[sizeof(struct in6_addr)];

    if (fcd_conf_set_str(conf, key, value, len, msg, msglen) != 0) {
        return -1;
    }

    host = (char *) conf + key->offset;
    is_addr = (int *) ((char *) conf + key->aux);

    if (host[0] == '/') {
        *is_addr = 0;
        return 0;
    }

    if (inet_pton(AF_INET, host, addr) == 1
        || inet_pton(AF_INET6, host, addr) == 1)
    {
        *is_addr = 1;
        return 0;
    }

    snprintf(msg, msglen, "%s \"%.*s\" is neither a numeric address "
             "nor an absolute path", key->name, (int) (len < 64 ? len : 64),
             value);

    return -1;
}


static int
fcd_conf_set_port(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    int64_t  n;

    if (fcd_conf_number(value, len, 1, 65535, &n) != 0) {
        snprintf(msg, msglen, "invalid %s \"%.*s\", expected 1..65535",
                 key->name, (int) (len < 32 ? len : 32), value);
        return -1;
    }

    *(int *) ((char *) conf + key->offset) = (int) n;

    return 0;
}


static int
fcd_conf_set_msec(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    int64_t  n;

    if (fcd_conf_number(value, len, FCD_TICK_MIN_MS, FCD_TICK_MAX_MS, &n)
        != 0)
    {
        snprintf(msg, msglen, "invalid %s \"%.*s\", expected %d..%d",
                 key->name, (int) (len < 32 ? len : 32), value,
                 FCD_TICK_MIN_MS, FCD_TICK_MAX_MS);
        return -1;
    }

    *(int64_t *) ((char *) conf + key->offset) = n;

    return 0;
}


static int
fcd_conf_set_level(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    if (fc_log_level_parse(value, len, &conf->log_level) != 0) {
        snprintf(msg, msglen, "invalid %s \"%.*s\", expected error, warn, "
                 "info or debug", key->name, (int) (len < 32 ? len : 32),
                 value);
        return -1;
    }

    return 0;
}


static int
fcd_conf_set_vat(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    (void) key;

    return fc_vat_table_add(&conf->vat, value, len, msg, msglen);
}


/*
 * The base URL of a service the daemon delivers to: http or https, no
 * credentials in it (they come from password files and must not reach
 * a log line with the URL), stored without a trailing slash so that
 * paths are appended as "/sell".
 */

static int
fcd_conf_set_url(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    char        *url;
    size_t       skip;
    const char  *at, *slash;

    if (len > 7 && strncmp(value, "http://", 7) == 0) {
        skip = 7;

    } else if (len > 8 && strncmp(value, "https://", 8) == 0) {
        skip = 8;

    } else {
        snprintf(msg, msglen, "%s \"%.*s\" is not an http:// or https:// "
                 "URL", key->name, (int) (len < 128 ? len : 128), value);
        return -1;
    }

    slash = memchr(value + skip, '/', len - skip);
    at = memchr(value + skip, '@', (slash ? (size_t) (slash - value)
                                           : len) - skip);

    if (at != NULL) {
        snprintf(msg, msglen, "%s must not hold credentials; the password "
                 "goes in a password file", key->name);
        return -1;
    }

    if (memchr(value, ' ', len) != NULL || memchr(value, '\t', len) != NULL)
    {
        snprintf(msg, msglen, "%s \"%.*s\" contains a blank", key->name,
                 (int) (len < 128 ? len : 128), value);
        return -1;
    }

    while (len > skip && value[len - 1] == '/') {
        len--;
    }

    if (fcd_conf_set_str(conf, key, value, len, msg, msglen) != 0) {
        return -1;
    }

    url = (char *) conf + key->offset;

    if (url[skip] == '\0') {
        snprintf(msg, msglen, "%s has no host", key->name);
        return -1;
    }

    return 0;
}


static int
fcd_conf_set_count(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    int64_t  n;

    if (fcd_conf_number(value, len, 1, FCD_COUNT_MAX, &n) != 0) {
        snprintf(msg, msglen, "invalid %s \"%.*s\", expected 1..%d",
                 key->name, (int) (len < 32 ? len : 32), value,
                 FCD_COUNT_MAX);
        return -1;
    }

    *(int64_t *) ((char *) conf + key->offset) = n;

    return 0;
}


/* the seller's INN goes on every receipt: a typo is caught here */

static int
fcd_conf_set_inn(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    if (!fc_inn_valid(value, len)) {
        snprintf(msg, msglen, "%s \"%.*s\" is not a valid INN (10 or 12 "
                 "digits with check digits)", key->name,
                 (int) (len < 32 ? len : 32), value);
        return -1;
    }

    return fcd_conf_set_str(conf, key, value, len, msg, msglen);
}


/* the tax systems of tag 1055, as the cash register API names them */

static int
fcd_conf_set_sno(fcd_conf_t *conf, const fcd_conf_key_t *key,
    const char *value, size_t len, char *msg, size_t msglen)
{
    size_t              i;
    static const char  *known[] = {
        "osn", "usn_income", "usn_income_outcome", "envd", "esn", "patent"
    };

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strlen(known[i]) == len && memcmp(known[i], value, len) == 0) {
            return fcd_conf_set_str(conf, key, value, len, msg, msglen);
        }
    }

    snprintf(msg, msglen, "invalid %s \"%.*s\", expected osn, usn_income, "
             "usn_income_outcome, envd, esn or patent", key->name,
             (int) (len < 32 ? len : 32), value);

    return -1;
}


static int
fcd_conf_number(const char *value, size_t len, int64_t min, int64_t max,
    int64_t *n)
{
    size_t   i;
    int64_t  v;

    if (len == 0 || len > 18) {
        return -1;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return -1;
        }

        v = v * 10 + (value[i] - '0');
    }

    if (v < min || v > max) {
        return -1;
    }

    *n = v;

    return 0;
}


/*
 * The password is the first line of the file the key names, read into
 * the field key->aux, FCD_PASSWORD_LEN bytes.  It is read when the
 * configuration is, so that a missing file is reported as a
 * configuration error rather than as a failing connection later; its
 * contents never appear in a message.
 */

static int
fcd_conf_read_password(fcd_conf_t *conf, const fcd_conf_key_t *key,
    char *msg, size_t msglen)
{
    int           fd;
    char         *nl, *pw;
    size_t        len;
    ssize_t       n;
    const char   *path;
    struct stat   st;

    path = (const char *) conf + key->offset;
    pw = (char *) conf + key->aux;

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        snprintf(msg, msglen, "cannot open %s \"%.256s\": %s", key->name,
                 path, strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(msg, msglen, "%s \"%.256s\" is not a file", key->name,
                 path);
        return -1;
    }

    /* read straight into conf, so that no other buffer holds a copy */
    len = 0;

    do {
        n = read(fd, pw + len, FCD_PASSWORD_LEN - 1 - len);

        if (n > 0) {
            len += (size_t) n;
        }

    } while ((n > 0 || (n == -1 && errno == EINTR))
             && len < FCD_PASSWORD_LEN - 1);

    close(fd);

    if (n == -1) {
        explicit_bzero(pw, FCD_PASSWORD_LEN);
        snprintf(msg, msglen, "cannot read %s \"%.256s\": %s", key->name,
                 path, strerror(errno));
        return -1;
    }

    pw[len] = '\0';
    nl = memchr(pw, '\n', len);

    if (nl == NULL && len == FCD_PASSWORD_LEN - 1) {
        explicit_bzero(pw, FCD_PASSWORD_LEN);
        snprintf(msg, msglen, "password in \"%.256s\" is longer than %d "
                 "bytes", path, FCD_PASSWORD_LEN - 2);
        return -1;
    }

    if (nl != NULL) {
        len = (size_t) (nl - pw);
    }

    if (len > 0 && pw[len - 1] == '\r') {
        len--;
    }

    /* wipe what followed the first line too */
    explicit_bzero(pw + len, FCD_PASSWORD_LEN - len);

    if (len == 0) {
        snprintf(msg, msglen, "%s \"%.256s\" is empty", key->name, path);
        return -1;
    }

    return 0;
}

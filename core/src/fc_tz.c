/*
 * TZif reader, offset lookup and calendar periods in a zone.
 *
 * A TZif file (RFC 8536) is a table of transition instants, each saying
 * which offset is in force from then on, and, from version 2 on, a
 * footer with a POSIX TZ string ("MSK-3", "<+05>-5",
 * "CET-1CEST,M3.5.0,M10.5.0/3") that gives the rule for every instant
 * after the last transition.  Version 1 files carry 32-bit instants
 * only; version 2+ files repeat the table with 64-bit instants after the
 * version 1 data, and only that second table is read here.
 *
 * The table is kept as two sorted arrays (instants and offsets), so an
 * offset is one binary search.  Past the table, the footer rule is
 * evaluated: a fixed offset, or standard and daylight offsets with the
 * two yearly switch dates.  Russian zones have had fixed offsets since
 * 2014, but historical data and foreign zones need the general case.
 *
 * The reverse direction, from a wall-clock time to an instant, is what
 * period bounds need ("00:00 on the first of the month, local").  A
 * local time maps to zero, one or two instants; fc_tz_local_to_utc()
 * explains how each case is resolved.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc_date.h"
#include "fc_tz.h"


/* largest file read, bytes; real zone files are a few kilobytes */
#define FC_TZ_FILE_MAX     (256 * 1024)

#define FC_TZIF_HEADER_LEN 44

/* offsets RFC 8536 allows, seconds; about -25 to +26 hours */
#define FC_TZ_OFF_MIN      (-89999)
#define FC_TZ_OFF_MAX      93599

/* daylight time is one hour ahead unless the TZ string says otherwise */
#define FC_TZ_DST_SHIFT    3600

/* a switch happens at 02:00 local unless the TZ string says otherwise */
#define FC_TZ_RULE_TIME    7200

/*
 * How far around a local time the offsets before and after a possible
 * transition are sampled, seconds.  It must exceed the largest offset,
 * and zones never switch twice within it.
 */
#define FC_TZ_PROBE        (2 * FC_SECS_PER_DAY)


typedef struct {
    uint32_t     isutcnt;
    uint32_t     isstdcnt;
    uint32_t     leapcnt;
    uint32_t     timecnt;
    uint32_t     typecnt;
    uint32_t     charcnt;
} fc_tzif_header_t;

/* one switch date of a POSIX TZ rule */
typedef struct {
    char         kind;                  /* 'J' Jn, 'D' n, 'M' Mm.w.d */
    int          month;                 /* 1..12 */
    int          week;                  /* 1..5, 5 = the last one */
    int          wday;                  /* 0 = Sunday .. 6 */
    int          yday;                  /* J: 1..365, D: 0..365 */
    int32_t      time;                  /* local seconds after 00:00 */
} fc_tz_date_t;

typedef struct {
    int32_t      std_off;               /* seconds east of UTC */
    int32_t      dst_off;
    int          has_dst;
    fc_tz_date_t start;                 /* daylight time begins */
    fc_tz_date_t end;                   /* and ends */
} fc_tz_rule_t;

struct fc_tz_s {
    fc_tz_t     *next;                  /* the cache list */
    size_t       ntrans;
    int64_t     *trans;                 /* ascending transition instants */
    int32_t     *trans_off;             /* offset from trans[i] on */
    int32_t      first_off;             /* offset before trans[0] */
    int          has_rule;
    fc_tz_rule_t rule;                  /* in force after the last trans */
    char         name[FC_TZ_NAME_MAX + 1];
};


static fc_tz_t *fc_tz_read(const char *name);
static int fc_tzif_header(const unsigned char *p, const unsigned char *end,
    fc_tzif_header_t *h, int *version);
static size_t fc_tzif_block_size(const fc_tzif_header_t *h, size_t tsize);
static fc_tz_t *fc_tzif_block(const char *name, const unsigned char *p,
    const fc_tzif_header_t *h, size_t tsize);
static int fc_tz_footer(fc_tz_t *tz, const unsigned char *p,
    const unsigned char *end);
static int fc_tz_rule_parse(const char *p, const char *end,
    fc_tz_rule_t *rule);
static const char *fc_tz_rule_abbr(const char *p, const char *end);
static const char *fc_tz_rule_hms(const char *p, const char *end,
    int max_hours, int32_t *secs);
static const char *fc_tz_rule_date(const char *p, const char *end,
    fc_tz_date_t *d);
static const char *fc_tz_rule_number(const char *p, const char *end,
    int min, int max, int *n);
static int64_t fc_tz_rule_day(const fc_tz_date_t *d, int64_t year);
static int32_t fc_tz_rule_offset(const fc_tz_rule_t *rule, int64_t utc);
static int32_t fc_tz_offset_at(const fc_tz_t *tz, int64_t utc);
static int64_t fc_tz_local_to_utc(const fc_tz_t *tz, int64_t local);
static void fc_tz_split(int64_t local, int32_t off, fc_local_t *lt);
static uint32_t fc_be32(const unsigned char *p);
static int64_t fc_be64(const unsigned char *p);
static int64_t fc_floor_div(int64_t a, int64_t b);


static pthread_mutex_t  fc_tz_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static fc_tz_t         *fc_tz_cache;

static const char      *fc_period_names[] = {
    "day", "week", "month", "quarter", "year"
};


int
fc_tz_name_valid(const char *name)
{
    size_t  i, len;
    char    c;

    len = strlen(name);

    if (len == 0 || len > FC_TZ_NAME_MAX
        || name[0] == '/' || name[len - 1] == '/')
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = name[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '+')
        {
            continue;
        }

        if (c == '/' && name[i + 1] != '/') {
            continue;
        }

        return 0;
    }

    /* '.' is not allowed at all, so neither "." nor ".." can occur */
    return 1;
}


fc_tz_t *
fc_tz_load(const char *name)
{
    int       err;
    fc_tz_t  *tz;

    if (!fc_tz_name_valid(name)) {
        errno = EINVAL;
        return NULL;
    }

    pthread_mutex_lock(&fc_tz_cache_lock);

    for (tz = fc_tz_cache; tz != NULL; tz = tz->next) {
        if (strcmp(tz->name, name) == 0) {
            pthread_mutex_unlock(&fc_tz_cache_lock);
            return tz;
        }
    }

    tz = fc_tz_read(name);
    err = errno;

    if (tz != NULL) {
        tz->next = fc_tz_cache;
        fc_tz_cache = tz;
    }

    pthread_mutex_unlock(&fc_tz_cache_lock);

    errno = err;
    return tz;
}


void
fc_tz_cache_free(void)
{
    fc_tz_t  *tz, *next;

    pthread_mutex_lock(&fc_tz_cache_lock);

    for (tz = fc_tz_cache; tz != NULL; tz = next) {
        next = tz->next;
        free(tz);
    }

    fc_tz_cache = NULL;

    pthread_mutex_unlock(&fc_tz_cache_lock);
}


void
fc_tz_free(fc_tz_t *tz)
{
    free(tz);
}


const char *
fc_tz_name(const fc_tz_t *tz)
{
    return tz->name;
}


fc_tz_t *
fc_tz_parse(const char *name, const void *data, size_t len)
{
    int                   version;
    size_t                tsize, bsize;
    fc_tz_t              *tz;
    fc_tzif_header_t      h;
    const unsigned char  *p, *end, *block;

    p = data;
    end = p + len;

    if (strlen(name) > FC_TZ_NAME_MAX
        || fc_tzif_header(p, end, &h, &version) != 0)
    {
        errno = EINVAL;
        return NULL;
    }

    tsize = 4;
    block = p + FC_TZIF_HEADER_LEN;
    bsize = fc_tzif_block_size(&h, tsize);

    if (bsize > (size_t) (end - block)) {
        errno = EINVAL;
        return NULL;
    }

    if (version >= 2) {
        p = block + bsize;

        if (fc_tzif_header(p, end, &h, &version) != 0) {
            errno = EINVAL;
            return NULL;
        }

        tsize = 8;
        block = p + FC_TZIF_HEADER_LEN;
        bsize = fc_tzif_block_size(&h, tsize);

        if (bsize > (size_t) (end - block)) {
            errno = EINVAL;
            return NULL;
        }
    }

    tz = fc_tzif_block(name, block, &h, tsize);

    if (tz == NULL) {
        return NULL;
    }

    if (version >= 2 && fc_tz_footer(tz, block + bsize, end) != 0) {
        free(tz);
        errno = EINVAL;
        return NULL;
    }

    return tz;
}


int
fc_tz_offset(const fc_tz_t *tz, int64_t utc, int32_t *off)
{
    if (utc < FC_TZ_UTC_MIN || utc > FC_TZ_UTC_MAX) {
        return -1;
    }

    *off = fc_tz_offset_at(tz, utc);

    return 0;
}


int
fc_tz_local(const fc_tz_t *tz, int64_t utc, fc_local_t *lt)
{
    int32_t  off;

    if (fc_tz_offset(tz, utc, &off) != 0) {
        return -1;
    }

    fc_tz_split(utc + off, off, lt);

    return 0;
}


int
fc_tz_utc(const fc_tz_t *tz, int64_t days, int32_t sec_of_day,
    int64_t *utc)
{
    int64_t  t;

    /* a day of margin either way for the offset */
    if (days < FC_TZ_UTC_MIN / FC_SECS_PER_DAY - 1
        || days > FC_TZ_UTC_MAX / FC_SECS_PER_DAY + 1
        || sec_of_day < 0 || sec_of_day >= FC_SECS_PER_DAY)
    {
        return -1;
    }

    t = fc_tz_local_to_utc(tz, days * FC_SECS_PER_DAY + sec_of_day);

    if (t < FC_TZ_UTC_MIN || t > FC_TZ_UTC_MAX) {
        return -1;
    }

    *utc = t;

    return 0;
}


int
fc_period_bounds(const fc_tz_t *tz, int64_t utc, fc_period_t period,
    int64_t *start, int64_t *end)
{
    int         m;
    int64_t     first, next;
    fc_local_t  lt;

    if (fc_tz_local(tz, utc, &lt) != 0) {
        return -1;
    }

    switch (period) {

    case FC_PERIOD_DAY:
        first = lt.days;
        next = first + 1;
        break;

    case FC_PERIOD_WEEK:
        first = lt.days - (lt.weekday - 1);
        next = first + 7;
        break;

    case FC_PERIOD_MONTH:
        first = fc_days_from_civil(lt.year, lt.month, 1);
        next = first + fc_month_days(lt.year, lt.month);
        break;

    case FC_PERIOD_QUARTER:
        m = (lt.month - 1) / 3 * 3 + 1;
        first = fc_days_from_civil(lt.year, m, 1);
        next = (m == 10) ? fc_days_from_civil(lt.year + 1, 1, 1)
                         : fc_days_from_civil(lt.year, m + 3, 1);
        break;

    case FC_PERIOD_YEAR:
        first = fc_days_from_civil(lt.year, 1, 1);
        next = fc_days_from_civil(lt.year + 1, 1, 1);
        break;

    default:
        return -1;
    }

    *start = fc_tz_local_to_utc(tz, first * FC_SECS_PER_DAY);
    *end = fc_tz_local_to_utc(tz, next * FC_SECS_PER_DAY);

    return 0;
}


int
fc_period_key(const fc_tz_t *tz, int64_t utc, fc_period_t period,
    char *buf, size_t size)
{
    int         n, month, day;
    int64_t     thursday, year;
    fc_local_t  lt;

    if (fc_tz_local(tz, utc, &lt) != 0) {
        return -1;
    }

    switch (period) {

    case FC_PERIOD_DAY:
        n = snprintf(buf, size, "%04d-%02d-%02d", lt.year, lt.month, lt.day);
        break;

    case FC_PERIOD_WEEK:
        /*
         * An ISO week belongs to the year that holds its Thursday, so
         * 2027-01-01, a Friday, is in 2026-W53, and 2024-12-30, a
         * Monday, is in 2025-W01.
         */
        thursday = lt.days - (lt.weekday - 1) + 3;
        fc_civil_from_days(thursday, &year, &month, &day);
        n = snprintf(buf, size, "%04lld-W%02d", (long long) year,
                     (int) ((thursday - fc_days_from_civil(year, 1, 1))
                            / 7 + 1));
        break;

    case FC_PERIOD_MONTH:
        n = snprintf(buf, size, "%04d-%02d", lt.year, lt.month);
        break;

    case FC_PERIOD_QUARTER:
        n = snprintf(buf, size, "%04d-Q%d", lt.year, (lt.month + 2) / 3);
        break;

    case FC_PERIOD_YEAR:
        n = snprintf(buf, size, "%04d", lt.year);
        break;

    default:
        return -1;
    }

    if (n < 0 || (size_t) n >= size) {
        return -1;
    }

    return n;
}


int
fc_period_parse(const char *s, size_t len, fc_period_t *period)
{
    size_t  i;

    for (i = 0; i < sizeof(fc_period_names) / sizeof(fc_period_names[0]);
         i++)
    {
        if (strlen(fc_period_names[i]) == len
            && memcmp(fc_period_names[i], s, len) == 0)
        {
            *period = (fc_period_t) i;
            return 0;
        }
    }

    return -1;
}


const char *
fc_period_name(fc_period_t period)
{
    if ((size_t) period
        >= sizeof(fc_period_names) / sizeof(fc_period_names[0]))
    {
        return NULL;
    }

    return fc_period_names[period];
}


static fc_tz_t *
fc_tz_read(const char *name)
{
    int             fd, err;
    char            path[sizeof(FC_TZ_DIR) + FC_TZ_NAME_MAX + 1];
    size_t          got;
    ssize_t         n;
    fc_tz_t        *tz;
    struct stat     st;
    unsigned char  *data;

    snprintf(path, sizeof(path), "%s/%s", FC_TZ_DIR, name);

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        return NULL;
    }

    if (fstat(fd, &st) == -1) {
        err = errno;
        close(fd);
        errno = err;
        return NULL;
    }

    if (!S_ISREG(st.st_mode) || st.st_size > FC_TZ_FILE_MAX) {
        close(fd);
        errno = EINVAL;
        return NULL;
    }

    data = malloc((size_t) st.st_size + 1);

    if (data == NULL) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }

    for (got = 0; got < (size_t) st.st_size; got += (size_t) n) {
        n = read(fd, data + got, (size_t) st.st_size - got);

        if (n == -1 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            err = (n == 0) ? EINVAL : errno;
            free(data);
            close(fd);
            errno = err;
            return NULL;
        }
    }

    close(fd);

    tz = fc_tz_parse(name, data, got);
    err = errno;

    free(data);

    errno = err;
    return tz;
}


static int
fc_tzif_header(const unsigned char *p, const unsigned char *end,
    fc_tzif_header_t *h, int *version)
{
    if (end - p < FC_TZIF_HEADER_LEN || memcmp(p, "TZif", 4) != 0) {
        return -1;
    }

    /* version 1 has a NUL here, later ones an ASCII digit */
    if (p[4] == '\0') {
        *version = 1;

    } else if (p[4] >= '2' && p[4] <= '9') {
        *version = p[4] - '0';

    } else {
        return -1;
    }

    h->isutcnt = fc_be32(p + 20);
    h->isstdcnt = fc_be32(p + 24);
    h->leapcnt = fc_be32(p + 28);
    h->timecnt = fc_be32(p + 32);
    h->typecnt = fc_be32(p + 36);
    h->charcnt = fc_be32(p + 40);

    return 0;
}


static size_t
fc_tzif_block_size(const fc_tzif_header_t *h, size_t tsize)
{
    /* the counts are 32-bit, so this cannot overflow a 64-bit size_t */
    return (size_t) h->timecnt * (tsize + 1)
           + (size_t) h->typecnt * 6
           + h->charcnt
           + (size_t) h->leapcnt * (tsize + 4)
           + h->isstdcnt
           + h->isutcnt;
}


static fc_tz_t *
fc_tzif_block(const char *name, const unsigned char *p,
    const fc_tzif_header_t *h, size_t tsize)
{
    int32_t               off;
    size_t                i;
    fc_tz_t              *tz;
    const unsigned char  *times, *idx, *types;

    if (h->typecnt == 0 || h->leapcnt != 0
        || (h->isstdcnt != 0 && h->isstdcnt != h->typecnt)
        || (h->isutcnt != 0 && h->isutcnt != h->typecnt))
    {
        errno = EINVAL;
        return NULL;
    }

    times = p;
    idx = times + (size_t) h->timecnt * tsize;
    types = idx + h->timecnt;

    for (i = 0; i < h->typecnt; i++) {
        off = (int32_t) fc_be32(types + i * 6);

        if (off < FC_TZ_OFF_MIN || off > FC_TZ_OFF_MAX) {
            errno = EINVAL;
            return NULL;
        }
    }

    tz = calloc(1, sizeof(fc_tz_t)
                   + (size_t) h->timecnt * (sizeof(int64_t)
                                            + sizeof(int32_t)));

    if (tz == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    /* sizeof(fc_tz_t) is a multiple of 8, so the arrays are aligned */
    tz->trans = (int64_t *) (tz + 1);
    tz->trans_off = (int32_t *) (tz->trans + h->timecnt);
    tz->ntrans = h->timecnt;
    tz->first_off = (int32_t) fc_be32(types);

    for (i = 0; i < h->timecnt; i++) {
        tz->trans[i] = (tsize == 8) ? fc_be64(times + i * 8)
                                    : (int32_t) fc_be32(times + i * 4);

        if (idx[i] >= h->typecnt
            || (i > 0 && tz->trans[i] <= tz->trans[i - 1]))
        {
            free(tz);
            errno = EINVAL;
            return NULL;
        }

        tz->trans_off[i] = (int32_t) fc_be32(types + idx[i] * 6);
    }

    strcpy(tz->name, name);

    return tz;
}


/*
 * The footer is the TZ string between two newlines; it may be empty,
 * which means that nothing is known past the last transition and its
 * offset stays in force.
 */

static int
fc_tz_footer(fc_tz_t *tz, const unsigned char *p, const unsigned char *end)
{
    const unsigned char  *nl;

    if (p == end || *p != '\n') {
        return -1;
    }

    p++;
    nl = memchr(p, '\n', (size_t) (end - p));

    if (nl == NULL) {
        return -1;
    }

    if (nl == p) {
        return 0;
    }

    if (fc_tz_rule_parse((const char *) p, (const char *) nl, &tz->rule)
        != 0)
    {
        return -1;
    }

    tz->has_rule = 1;

    return 0;
}


/*
 * std offset [dst [offset] [,start[/time],end[/time]]], as in POSIX,
 * with the RFC 8536 extension that a switch time may be negative or
 * exceed 24 hours.  POSIX offsets count west of Greenwich, so "MSK-3" is
 * three hours east; they are stored here with the sign turned.
 */

static int
fc_tz_rule_parse(const char *p, const char *end, fc_tz_rule_t *rule)
{
    int32_t  secs;

    memset(rule, 0, sizeof(fc_tz_rule_t));

    p = fc_tz_rule_abbr(p, end);

    if (p == NULL) {
        return -1;
    }

    p = fc_tz_rule_hms(p, end, 24, &secs);

    if (p == NULL) {
        return -1;
    }

    rule->std_off = -secs;

    if (p == end) {
        return 0;
    }

    p = fc_tz_rule_abbr(p, end);

    if (p == NULL) {
        return -1;
    }

    rule->has_dst = 1;
    rule->dst_off = rule->std_off + FC_TZ_DST_SHIFT;

    if (p < end && *p != ',') {
        p = fc_tz_rule_hms(p, end, 24, &secs);

        if (p == NULL) {
            return -1;
        }

        rule->dst_off = -secs;
    }

    if (p == end) {
        /* the POSIX default: the second Sunday of March to the first of
         * November, 02:00 */
        rule->start.kind = 'M';
        rule->start.month = 3;
        rule->start.week = 2;
        rule->start.time = FC_TZ_RULE_TIME;
        rule->end.kind = 'M';
        rule->end.month = 11;
        rule->end.week = 1;
        rule->end.time = FC_TZ_RULE_TIME;
        return 0;
    }

    if (*p++ != ',') {
        return -1;
    }

    p = fc_tz_rule_date(p, end, &rule->start);

    if (p == NULL || p == end || *p++ != ',') {
        return -1;
    }

    p = fc_tz_rule_date(p, end, &rule->end);

    if (p != end) {
        return -1;
    }

    return 0;
}


/* a zone abbreviation: three or more letters, or <...> quoted */

static const char *
fc_tz_rule_abbr(const char *p, const char *end)
{
    const char  *start;

    if (p < end && *p == '<') {
        start = ++p;

        while (p < end && ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')
                           || (*p >= '0' && *p <= '9')
                           || *p == '+' || *p == '-'))
        {
            p++;
        }

        if (p == end || *p != '>' || p - start < 3) {
            return NULL;
        }

        return p + 1;
    }

    start = p;

    while (p < end && ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
    {
        p++;
    }

    return (p - start < 3) ? NULL : p;
}


/* [+-]h[h...][:mm[:ss]], hours up to max_hours */

static const char *
fc_tz_rule_hms(const char *p, const char *end, int max_hours, int32_t *secs)
{
    int  neg, h, m, s;

    neg = 0;

    if (p < end && (*p == '+' || *p == '-')) {
        neg = (*p == '-');
        p++;
    }

    p = fc_tz_rule_number(p, end, 0, max_hours, &h);

    if (p == NULL) {
        return NULL;
    }

    m = 0;
    s = 0;

    if (p < end && *p == ':') {
        p = fc_tz_rule_number(p + 1, end, 0, 59, &m);

        if (p != NULL && p < end && *p == ':') {
            p = fc_tz_rule_number(p + 1, end, 0, 59, &s);
        }

        if (p == NULL) {
            return NULL;
        }
    }

    *secs = h * 3600 + m * 60 + s;

    if (neg) {
        *secs = -*secs;
    }

    return p;
}


/* Jn, n or Mm.w.d, then an optional /time */

static const char *
fc_tz_rule_date(const char *p, const char *end, fc_tz_date_t *d)
{
    if (p == end) {
        return NULL;
    }

    if (*p == 'J') {
        d->kind = 'J';
        p = fc_tz_rule_number(p + 1, end, 1, 365, &d->yday);

    } else if (*p == 'M') {
        d->kind = 'M';
        p = fc_tz_rule_number(p + 1, end, 1, 12, &d->month);

        if (p != NULL && p < end && *p == '.') {
            p = fc_tz_rule_number(p + 1, end, 1, 5, &d->week);

        } else {
            p = NULL;
        }

        if (p != NULL && p < end && *p == '.') {
            p = fc_tz_rule_number(p + 1, end, 0, 6, &d->wday);

        } else {
            p = NULL;
        }

    } else {
        d->kind = 'D';
        p = fc_tz_rule_number(p, end, 0, 365, &d->yday);
    }

    if (p == NULL) {
        return NULL;
    }

    d->time = FC_TZ_RULE_TIME;

    if (p < end && *p == '/') {
        p = fc_tz_rule_hms(p + 1, end, 167, &d->time);
    }

    return p;
}


static const char *
fc_tz_rule_number(const char *p, const char *end, int min, int max, int *n)
{
    int          v;
    const char  *start;

    v = 0;
    start = p;

    while (p < end && *p >= '0' && *p <= '9' && p - start < 3) {
        v = v * 10 + (*p++ - '0');
    }

    if (p == start || v < min || v > max) {
        return NULL;
    }

    *n = v;

    return p;
}


/* the local date (a day number) on which a switch falls in a year */

static int64_t
fc_tz_rule_day(const fc_tz_date_t *d, int64_t year)
{
    int64_t  jan1, first, day;
    int      wday1, mdays;

    jan1 = fc_days_from_civil(year, 1, 1);

    switch (d->kind) {

    case 'J':
        /* Jn never counts 29 February, so later days shift in leap years */
        day = jan1 + d->yday - 1;

        if (d->yday >= 60 && fc_is_leap_year(year)) {
            day++;
        }

        return day;

    case 'D':
        return jan1 + d->yday;

    default:
        first = fc_days_from_civil(year, d->month, 1);
        wday1 = fc_iso_weekday(first) % 7;          /* 0 = Sunday */
        mdays = fc_month_days(year, d->month);

        day = first + (d->wday - wday1 + 7) % 7 + 7 * (d->week - 1);

        /* week 5 means the last such weekday, which may be the 4th */
        while (day >= first + mdays) {
            day -= 7;
        }

        return day;
    }
}


/*
 * The switches of the year that utc falls in (by standard time) are
 * computed as instants: daylight time starts at a local standard time
 * and ends at a local daylight time.  In the northern pattern the start
 * comes first in the year and daylight time lies between; in the
 * southern one the end comes first and daylight time lies outside.
 */

static int32_t
fc_tz_rule_offset(const fc_tz_rule_t *rule, int64_t utc)
{
    int      month, day, dst;
    int64_t  year, start, end;

    if (!rule->has_dst) {
        return rule->std_off;
    }

    fc_civil_from_days(fc_floor_div(utc + rule->std_off, FC_SECS_PER_DAY),
                       &year, &month, &day);

    start = fc_tz_rule_day(&rule->start, year) * FC_SECS_PER_DAY
            + rule->start.time - rule->std_off;
    end = fc_tz_rule_day(&rule->end, year) * FC_SECS_PER_DAY
          + rule->end.time - rule->dst_off;

    if (start < end) {
        dst = (utc >= start && utc < end);

    } else {
        dst = !(utc >= end && utc < start);
    }

    return dst ? rule->dst_off : rule->std_off;
}


static int32_t
fc_tz_offset_at(const fc_tz_t *tz, int64_t utc)
{
    size_t  lo, hi, mid, n;

    n = tz->ntrans;

    if (n == 0 || utc >= tz->trans[n - 1]) {
        if (tz->has_rule) {
            return fc_tz_rule_offset(&tz->rule, utc);
        }

        return (n == 0) ? tz->first_off : tz->trans_off[n - 1];
    }

    if (utc < tz->trans[0]) {
        return tz->first_off;
    }

    /* trans[lo] <= utc < trans[hi] */
    lo = 0;
    hi = n - 1;

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;

        if (tz->trans[mid] <= utc) {
            lo = mid;

        } else {
            hi = mid;
        }
    }

    return tz->trans_off[lo];
}


/*
 * A wall-clock time is the instant local - off for whichever offset off
 * was in force at that instant.  Around one transition there are two
 * candidates, with the offsets before and after it; each is checked
 * against the offset actually in force at the candidate instant:
 *
 *   both hold    the clocks were turned back and the time occurred twice:
 *                the earlier instant is taken, so that a period starts
 *                at its first midnight;
 *   one holds    the usual case;
 *   none holds   the clocks were turned forward over this time: the
 *                transition itself is taken, found by bisection, since
 *                it is the first instant whose local time is later.
 */

static int64_t
fc_tz_local_to_utc(const fc_tz_t *tz, int64_t local)
{
    int      ok1, ok2;
    int32_t  before, after, lo_off;
    int64_t  t1, t2, lo, hi, mid;

    before = fc_tz_offset_at(tz, local - FC_TZ_PROBE);
    after = fc_tz_offset_at(tz, local + FC_TZ_PROBE);

    t1 = local - before;
    t2 = local - after;

    ok1 = (fc_tz_offset_at(tz, t1) == before);
    ok2 = (fc_tz_offset_at(tz, t2) == after);

    if (ok1 && ok2) {
        return (t1 < t2) ? t1 : t2;
    }

    if (ok1) {
        return t1;
    }

    if (ok2) {
        return t2;
    }

    lo = (t1 < t2) ? t1 : t2;
    hi = (t1 < t2) ? t2 : t1;
    lo_off = fc_tz_offset_at(tz, lo);

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;

        if (fc_tz_offset_at(tz, mid) == lo_off) {
            lo = mid;

        } else {
            hi = mid;
        }
    }

    return hi;
}


static void
fc_tz_split(int64_t local, int32_t off, fc_local_t *lt)
{
    int      month, day;
    int64_t  days, sod, year;

    days = fc_floor_div(local, FC_SECS_PER_DAY);
    sod = local - days * FC_SECS_PER_DAY;

    fc_civil_from_days(days, &year, &month, &day);

    lt->days = days;
    lt->utc_offset = off;
    lt->year = (int) year;
    lt->month = month;
    lt->day = day;
    lt->hour = (int) (sod / 3600);
    lt->minute = (int) (sod / 60 % 60);
    lt->second = (int) (sod % 60);
    lt->weekday = fc_iso_weekday(days);
    lt->yday = (int) (days - fc_days_from_civil(year, 1, 1)) + 1;
}


static uint32_t
fc_be32(const unsigned char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}


static int64_t
fc_be64(const unsigned char *p)
{
    return (int64_t) ((uint64_t) fc_be32(p) << 32 | fc_be32(p + 4));
}


static int64_t
fc_floor_div(int64_t a, int64_t b)
{
    int64_t  q;

    q = a / b;

    if (a % b != 0 && (a < 0) != (b < 0)) {
        q--;
    }

    return q;
}

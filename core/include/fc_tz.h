/*
 * Time zones and calendar periods.
 *
 * Fuel-card limits are counted per day, week, month, quarter or year of
 * the contract's own zone (a driver in Vladivostok starts a new day seven
 * hours before Moscow does), so the platform reads the system's TZif
 * files itself instead of relying on the process-wide TZ of libc, which
 * cannot serve many zones at once and is not thread-safe to switch.
 *
 * Instants are int64_t seconds since the Unix epoch (UTC), accepted from
 * 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.  Offsets are int32_t
 * seconds east of UTC (Moscow is +10800).
 */

#ifndef _FC_TZ_H_INCLUDED_
#define _FC_TZ_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define FC_TZ_DIR          "/usr/share/zoneinfo"

/* longest zone name accepted, without the NUL */
#define FC_TZ_NAME_MAX     127

#define FC_TZ_UTC_MIN      (-62135596800LL)     /* 0001-01-01T00:00:00Z */
#define FC_TZ_UTC_MAX      253402300799LL       /* 9999-12-31T23:59:59Z */

/* "2026-12-04", "2026-W49", "2026-12", "2026-Q4", "2026", plus NUL */
#define FC_PERIOD_KEY_LEN  16


typedef struct fc_tz_s  fc_tz_t;

typedef enum {
    FC_PERIOD_DAY = 0,
    FC_PERIOD_WEEK,                     /* ISO week, from Monday 00:00 */
    FC_PERIOD_MONTH,
    FC_PERIOD_QUARTER,
    FC_PERIOD_YEAR
} fc_period_t;

/* an instant as the wall clock of a zone shows it */
typedef struct {
    int64_t      days;                  /* the local date, see fc_date.h */
    int32_t      utc_offset;            /* seconds east of UTC */
    int          year;
    int          month;                 /* 1..12 */
    int          day;                   /* 1..31 */
    int          hour;
    int          minute;
    int          second;
    int          weekday;               /* ISO: 1 = Monday .. 7 = Sunday */
    int          yday;                  /* 1..366 */
} fc_local_t;


/*
 * 1 if name may be looked up under FC_TZ_DIR: 1..FC_TZ_NAME_MAX of
 * letters, digits, '/', '_', '-' and '+', no leading, trailing or doubled
 * '/', hence no "." or ".." component; 0 otherwise.
 */
int fc_tz_name_valid(const char *name);

/*
 * Returns the zone FC_TZ_DIR/<name>, reading and parsing the file on the
 * first call for that name and from a process-wide cache afterwards;
 * safe to call from several threads.  Cached zones live until
 * fc_tz_cache_free().  NULL with errno set on failure: EINVAL for a bad
 * name or a malformed file, ENOENT and the like from open(2).
 */
fc_tz_t *fc_tz_load(const char *name);

/*
 * Parses TZif data (version 1 to 4) into a new zone that the caller owns
 * and releases with fc_tz_free(); not cached.  Files with leap-second
 * records ("right/" zones) are refused, since civil time ignores them.
 * NULL with errno set to EINVAL or ENOMEM on failure.
 */
fc_tz_t *fc_tz_parse(const char *name, const void *data, size_t len);

/* releases a zone from fc_tz_parse(); never one from fc_tz_load() */
void fc_tz_free(fc_tz_t *tz);

/* releases every cached zone; no zone from fc_tz_load() may be in use */
void fc_tz_cache_free(void);

/* the name the zone was loaded or parsed under */
const char *fc_tz_name(const fc_tz_t *tz);

/* *off = the zone's offset at utc; -1 if utc is out of range */
int fc_tz_offset(const fc_tz_t *tz, int64_t utc, int32_t *off);

/* fills lt with the wall clock time at utc; -1 if utc is out of range */
int fc_tz_local(const fc_tz_t *tz, int64_t utc, fc_local_t *lt);

/*
 * *utc = the instant at which the zone's clock shows sec_of_day seconds
 * into the local date days.  A time that occurs twice (clocks turned
 * back) gives the earlier instant; a time that never occurs (clocks
 * turned forward over it) gives the instant of the transition, the first
 * one whose local time is later.  -1 if out of range.
 */
int fc_tz_utc(const fc_tz_t *tz, int64_t days, int32_t sec_of_day,
    int64_t *utc);

/*
 * The period of the zone's local calendar that contains utc, as the
 * half-open interval [*start, *end) of instants.  A day is not always
 * 86400 s long: Moscow's 2014-10-26 had 25 hours.  -1 if utc is out of
 * range or period is unknown.
 */
int fc_period_bounds(const fc_tz_t *tz, int64_t utc, fc_period_t period,
    int64_t *start, int64_t *end);

/*
 * Writes the name of the period containing utc: "2026-12-04",
 * "2026-W53" (the ISO week-numbering year, which differs from the
 * calendar year around 1 January), "2026-12", "2026-Q4" or "2026".
 * Returns the length written, or -1 on bad input or a short buffer.
 */
int fc_period_key(const fc_tz_t *tz, int64_t utc, fc_period_t period,
    char *buf, size_t size);

/* "day", "week", "month", "quarter", "year" to the enum; -1 if unknown */
int fc_period_parse(const char *s, size_t len, fc_period_t *period);

/* the name fc_period_parse() accepts, or NULL for an unknown value */
const char *fc_period_name(fc_period_t period);


#endif /* _FC_TZ_H_INCLUDED_ */

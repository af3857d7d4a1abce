/*
 * fc_tz: TZif reading, offsets, local time and calendar periods.
 *
 * The zone files are the system's (/usr/share/zoneinfo, Debian's tzdata);
 * the expected values were checked against Python's zoneinfo.  Synthetic
 * TZif data built in memory cover the footer rules that no Russian zone
 * uses any more.
 */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fc_date.h"
#include "fc_tz.h"


/* "YYYY-MM-DDTHH:MM:SSZ" to a Unix time, so expectations read as dates */
static int64_t
at(const char *iso)
{
    int      h, m, s;
    int64_t  days;

    assert_int_equal(strlen(iso), 20);
    assert_int_equal(fc_date_parse(iso, 10, &days), 0);
    assert_int_equal(sscanf(iso + 11, "%2d:%2d:%2dZ", &h, &m, &s), 3);

    return days * 86400 + h * 3600 + m * 60 + s;
}


static const fc_tz_t *
zone(const char *name)
{
    const fc_tz_t  *tz;

    tz = fc_tz_load(name);

    if (tz == NULL) {
        fail_msg("fc_tz_load(\"%s\"): %s", name, strerror(errno));
    }

    return tz;
}


static int32_t
offset(const char *name, const char *iso)
{
    int32_t  off = -1;

    assert_int_equal(fc_tz_offset(zone(name), at(iso), &off), 0);

    return off;
}


static void
expect_bounds(const char *name, const char *iso, fc_period_t period,
    const char *start, const char *end)
{
    int64_t  s = 0, e = 0;

    assert_int_equal(fc_period_bounds(zone(name), at(iso), period, &s, &e),
                     0);

    if (s != at(start) || e != at(end)) {
        fail_msg("%s %s %s: [%lld, %lld), expected [%s, %s)", name, iso,
                 fc_period_name(period), (long long) s, (long long) e,
                 start, end);
    }
}


static void
expect_key(const char *name, const char *iso, fc_period_t period,
    const char *key)
{
    char  buf[FC_PERIOD_KEY_LEN];

    assert_int_equal(fc_period_key(zone(name), at(iso), period, buf,
                                   sizeof(buf)), (int) strlen(key));
    assert_string_equal(buf, key);
}


/*
 * A minimal TZif file: version 1 with the given transitions, or version
 * 2 with an empty version 1 block, the transitions in 64 bits, and the
 * footer.  Types are plain offsets; every designation is "ZZZ".
 */

static size_t
put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char) (v >> 24);
    p[1] = (unsigned char) (v >> 16);
    p[2] = (unsigned char) (v >> 8);
    p[3] = (unsigned char) v;
    return 4;
}


static size_t
put_header(unsigned char *p, char version, uint32_t timecnt,
    uint32_t typecnt, uint32_t leapcnt)
{
    memset(p, 0, 44);
    memcpy(p, "TZif", 4);
    p[4] = (unsigned char) version;
    put32(p + 28, leapcnt);
    put32(p + 32, timecnt);
    put32(p + 36, typecnt);
    put32(p + 40, 4);
    return 44;
}


static size_t
build_tzif(unsigned char *buf, int version, const int64_t *times,
    const unsigned char *idx, size_t n, const int32_t *offs,
    size_t ntypes, const char *footer)
{
    size_t  len, i;

    len = 0;

    if (version >= 2) {
        len += put_header(buf, '0' + version, 0, 1, 0);
        len += put32(buf + len, 0);
        buf[len++] = 0;
        buf[len++] = 0;
        memcpy(buf + len, "ZZZ", 4);
        len += 4;
    }

    len += put_header(buf + len, version >= 2 ? '0' + version : 0,
                      (uint32_t) n, (uint32_t) ntypes, 0);

    for (i = 0; i < n; i++) {
        if (version >= 2) {
            len += put32(buf + len, (uint32_t) ((uint64_t) times[i] >> 32));
        }

        len += put32(buf + len, (uint32_t) times[i]);
    }

    if (n > 0) {
        memcpy(buf + len, idx, n);
        len += n;
    }

    for (i = 0; i < ntypes; i++) {
        len += put32(buf + len, (uint32_t) offs[i]);
        buf[len++] = 0;
        buf[len++] = 0;
    }

    memcpy(buf + len, "ZZZ", 4);
    len += 4;

    if (version >= 2) {
        len += (size_t) sprintf((char *) buf + len, "\n%s\n", footer);
    }

    return len;
}


/* a zone of no transitions whose whole behaviour is the footer rule */
static int32_t
footer_offset(const char *footer, const char *iso)
{
    size_t          len;
    int32_t         off = -1, zero = 0;
    fc_tz_t        *tz;
    unsigned char   buf[512];

    len = build_tzif(buf, 2, NULL, NULL, 0, &zero, 1, footer);
    tz = fc_tz_parse("test", buf, len);

    if (tz == NULL) {
        fail_msg("footer \"%s\" was refused", footer);
    }

    assert_int_equal(fc_tz_offset(tz, at(iso), &off), 0);
    fc_tz_free(tz);

    return off;
}


static void
test_name_validation(void **state)
{
    char  longname[FC_TZ_NAME_MAX + 2];

    (void) state;

    assert_true(fc_tz_name_valid("Europe/Moscow"));
    assert_true(fc_tz_name_valid("America/Argentina/Buenos_Aires"));
    assert_true(fc_tz_name_valid("Etc/GMT-5"));
    assert_true(fc_tz_name_valid("Etc/GMT+12"));
    assert_true(fc_tz_name_valid("UTC"));

    assert_false(fc_tz_name_valid(""));
    assert_false(fc_tz_name_valid("/etc/passwd"));
    assert_false(fc_tz_name_valid("../../etc/passwd"));
    assert_false(fc_tz_name_valid("Europe/../../etc/shadow"));
    assert_false(fc_tz_name_valid("Europe/./Moscow"));
    assert_false(fc_tz_name_valid("Europe//Moscow"));
    assert_false(fc_tz_name_valid("Europe/"));
    assert_false(fc_tz_name_valid("Europe/Moscow\n"));
    assert_false(fc_tz_name_valid("Europe Moscow"));

    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(fc_tz_name_valid(longname));
    longname[FC_TZ_NAME_MAX] = '\0';
    assert_true(fc_tz_name_valid(longname));
}


static void
test_load_caches_and_reports_errors(void **state)
{
    (void) state;

    assert_ptr_equal(zone("Europe/Moscow"), zone("Europe/Moscow"));
    assert_string_equal(fc_tz_name(zone("Europe/Moscow")), "Europe/Moscow");

    errno = 0;
    assert_null(fc_tz_load("../zoneinfo/UTC"));
    assert_int_equal(errno, EINVAL);

    errno = 0;
    assert_null(fc_tz_load("Europe/Atlantis"));
    assert_int_equal(errno, ENOENT);

    /* a directory is not a zone */
    errno = 0;
    assert_null(fc_tz_load("Europe"));
    assert_int_not_equal(errno, 0);
}


static void
test_moscow_offsets_through_2011_and_2014(void **state)
{
    (void) state;

    /* summer time until March 2011 */
    assert_int_equal(offset("Europe/Moscow", "2010-07-01T00:00:00Z"), 14400);
    assert_int_equal(offset("Europe/Moscow", "2010-12-01T00:00:00Z"), 10800);

    /* 2011-03-27 02:00 +03 became 03:00 +04 and stayed there */
    assert_int_equal(offset("Europe/Moscow", "2011-03-26T22:59:59Z"), 10800);
    assert_int_equal(offset("Europe/Moscow", "2011-03-26T23:00:00Z"), 14400);
    assert_int_equal(offset("Europe/Moscow", "2012-12-01T00:00:00Z"), 14400);

    /* 2014-10-26 02:00 +04 became 01:00 +03 */
    assert_int_equal(offset("Europe/Moscow", "2014-10-25T21:59:59Z"), 14400);
    assert_int_equal(offset("Europe/Moscow", "2014-10-25T22:00:00Z"), 10800);

    /* past the table: the footer "MSK-3" */
    assert_int_equal(offset("Europe/Moscow", "2040-01-01T00:00:00Z"), 10800);
    assert_int_equal(offset("Europe/Moscow", "9999-12-31T23:59:59Z"), 10800);
}


static void
test_russian_zones_east(void **state)
{
    (void) state;

    assert_int_equal(offset("Asia/Yekaterinburg", "2010-06-01T00:00:00Z"),
                     21600);
    assert_int_equal(offset("Asia/Yekaterinburg", "2026-12-04T00:00:00Z"),
                     18000);
    /* the footer "<+05>-5" */
    assert_int_equal(offset("Asia/Yekaterinburg", "2040-06-01T00:00:00Z"),
                     18000);
    assert_int_equal(offset("Asia/Vladivostok", "2026-12-04T00:00:00Z"),
                     36000);
    assert_int_equal(offset("Asia/Vladivostok", "2050-07-01T00:00:00Z"),
                     36000);
}


static void
test_footer_dst_rules_of_real_zones(void **state)
{
    (void) state;

    /* 2040 is past the data of the files: the footer decides */
    assert_int_equal(offset("Europe/Berlin", "2040-01-15T12:00:00Z"), 3600);
    assert_int_equal(offset("Europe/Berlin", "2040-03-25T00:59:59Z"), 3600);
    assert_int_equal(offset("Europe/Berlin", "2040-03-25T01:00:00Z"), 7200);
    assert_int_equal(offset("Europe/Berlin", "2040-10-28T00:59:59Z"), 7200);
    assert_int_equal(offset("Europe/Berlin", "2040-10-28T01:00:00Z"), 3600);

    /* southern hemisphere: summer time spans the new year */
    assert_int_equal(offset("Australia/Sydney", "2040-01-01T00:00:00Z"),
                     39600);
    assert_int_equal(offset("Australia/Sydney", "2040-03-31T15:59:59Z"),
                     39600);
    assert_int_equal(offset("Australia/Sydney", "2040-03-31T16:00:00Z"),
                     36000);
    assert_int_equal(offset("Australia/Sydney", "2040-10-06T15:59:59Z"),
                     36000);
    assert_int_equal(offset("Australia/Sydney", "2040-10-06T16:00:00Z"),
                     39600);
}


static void
test_footer_rule_forms(void **state)
{
    (void) state;

    /* US rules, written out and as the POSIX default */
    assert_int_equal(footer_offset("EST5EDT,M3.2.0,M11.1.0",
                                   "2030-07-01T00:00:00Z"), -14400);
    assert_int_equal(footer_offset("EST5EDT,M3.2.0,M11.1.0",
                                   "2030-01-01T00:00:00Z"), -18000);
    assert_int_equal(footer_offset("EST5EDT", "2030-07-01T00:00:00Z"),
                     -14400);

    /* southern, switching at midnight */
    assert_int_equal(footer_offset("<-03>3<-02>,M10.1.0/0,M2.3.0/0",
                                   "2030-01-15T00:00:00Z"), -7200);
    assert_int_equal(footer_offset("<-03>3<-02>,M10.1.0/0,M2.3.0/0",
                                   "2030-06-15T00:00:00Z"), -10800);

    /* daylight time all year, the RFC 8536 idiom */
    assert_int_equal(footer_offset("EST5EDT,0/0,J365/25",
                                   "2030-01-01T03:00:00Z"), -14400);
    assert_int_equal(footer_offset("EST5EDT,0/0,J365/25",
                                   "2030-07-01T00:00:00Z"), -14400);

    /* Jn skips 29 February, n counts it */
    assert_int_equal(footer_offset("AAA0BBB,J60/0,J61/0",
                                   "2032-03-01T12:00:00Z"), 3600);
    assert_int_equal(footer_offset("AAA0BBB,J60/0,J61/0",
                                   "2032-02-29T12:00:00Z"), 0);
    assert_int_equal(footer_offset("AAA0BBB,59/0,60/0",
                                   "2032-02-29T12:00:00Z"), 3600);
    assert_int_equal(footer_offset("AAA0BBB,59/0,60/0",
                                   "2031-03-01T12:00:00Z"), 3600);

    /* fixed offsets with minutes, east and west */
    assert_int_equal(footer_offset("<+0530>-5:30", "2030-01-01T00:00:00Z"),
                     19800);
    assert_int_equal(footer_offset("<-0330>3:30", "2030-01-01T00:00:00Z"),
                     -12600);
}


static void
test_malformed_data_is_refused(void **state)
{
    size_t          len;
    int32_t         offs[2] = { 10800, 14400 };
    int64_t         times[2] = { 1000, 500 };
    unsigned char   idx[2] = { 1, 0 }, buf[512];

    (void) state;

    len = build_tzif(buf, 2, NULL, NULL, 0, offs, 1, "MSK");
    assert_null(fc_tz_parse("bad", buf, len));
    len = build_tzif(buf, 2, NULL, NULL, 0, offs, 1, "MSK-3,M3.5.0");
    assert_null(fc_tz_parse("bad", buf, len));
    len = build_tzif(buf, 2, NULL, NULL, 0, offs, 1, "MSK-3x");
    assert_null(fc_tz_parse("bad", buf, len));

    /* transitions out of order */
    len = build_tzif(buf, 1, times, idx, 2, offs, 2, NULL);
    assert_null(fc_tz_parse("bad", buf, len));

    /* a type index beyond the types */
    times[1] = 2000;
    idx[1] = 2;
    len = build_tzif(buf, 1, times, idx, 2, offs, 2, NULL);
    assert_null(fc_tz_parse("bad", buf, len));

    /* truncated, and not TZif at all */
    idx[1] = 0;
    len = build_tzif(buf, 2, times, idx, 2, offs, 2, "MSK-3");
    assert_null(fc_tz_parse("bad", buf, len - 3));
    assert_null(fc_tz_parse("bad", buf, 43));
    assert_null(fc_tz_parse("bad", "TZif", 4));

    /* leap-second records ("right/" zones) */
    len = build_tzif(buf, 1, NULL, NULL, 0, offs, 1, NULL);
    put32(buf + 28, 1);
    memset(buf + len, 0, 8);
    assert_null(fc_tz_parse("bad", buf, len + 8));
}


static void
test_version1_data(void **state)
{
    size_t          len;
    int32_t         off, offs[2] = { 7200, 10800 };
    int64_t         times[1] = { 1000000 };
    fc_tz_t        *tz;
    unsigned char   idx[1] = { 1 }, buf[512];

    (void) state;

    len = build_tzif(buf, 1, times, idx, 1, offs, 2, NULL);
    tz = fc_tz_parse("v1", buf, len);
    assert_non_null(tz);

    assert_int_equal(fc_tz_offset(tz, 999999, &off), 0);
    assert_int_equal(off, 7200);
    assert_int_equal(fc_tz_offset(tz, 1000000, &off), 0);
    assert_int_equal(off, 10800);
    assert_int_equal(fc_tz_offset(tz, at("2100-01-01T00:00:00Z"), &off), 0);
    assert_int_equal(off, 10800);

    fc_tz_free(tz);
}


static void
test_local_time_fields(void **state)
{
    fc_local_t  lt;

    (void) state;

    assert_int_equal(fc_tz_local(zone("Asia/Vladivostok"),
                                 at("2026-12-31T21:30:15Z"), &lt), 0);
    assert_int_equal(lt.year, 2027);
    assert_int_equal(lt.month, 1);
    assert_int_equal(lt.day, 1);
    assert_int_equal(lt.hour, 7);
    assert_int_equal(lt.minute, 30);
    assert_int_equal(lt.second, 15);
    assert_int_equal(lt.weekday, 5);                    /* Friday */
    assert_int_equal(lt.yday, 1);
    assert_int_equal(lt.utc_offset, 36000);

    assert_int_equal(fc_tz_local(zone("Europe/Moscow"),
                                 at("2024-12-31T20:59:59Z"), &lt), 0);
    assert_int_equal(lt.yday, 366);
    assert_int_equal(lt.weekday, 2);                    /* Tuesday */
    assert_int_equal(lt.hour, 23);

    assert_int_equal(fc_tz_local(zone("UTC"), at("1969-12-31T23:59:59Z"),
                                 &lt), 0);
    assert_int_equal(lt.year, 1969);
    assert_int_equal(lt.weekday, 3);                    /* Wednesday */
    assert_int_equal(lt.second, 59);
}


static void
test_range_is_enforced(void **state)
{
    int32_t     off;
    int64_t     s, e;
    fc_local_t  lt;

    (void) state;

    assert_int_equal(fc_tz_offset(zone("UTC"), FC_TZ_UTC_MIN, &off), 0);
    assert_int_equal(fc_tz_offset(zone("UTC"), FC_TZ_UTC_MIN - 1, &off), -1);
    assert_int_equal(fc_tz_local(zone("UTC"), FC_TZ_UTC_MAX + 1, &lt), -1);
    assert_int_equal(fc_period_bounds(zone("UTC"), INT64_MAX,
                                      FC_PERIOD_DAY, &s, &e), -1);
    assert_int_equal(fc_period_bounds(zone("UTC"), 0, (fc_period_t) 99,
                                      &s, &e), -1);
}


static void
test_local_to_utc_resolves_gaps_and_repeats(void **state)
{
    int64_t  days, t;

    (void) state;

    /* 2014-10-26 01:30 happened twice in Moscow: the first is taken */
    assert_int_equal(fc_date_parse("2014-10-26", 10, &days), 0);
    assert_int_equal(fc_tz_utc(zone("Europe/Moscow"), days, 5400, &t), 0);
    assert_int_equal(t, at("2014-10-25T21:30:00Z"));

    /* 2011-03-27 02:30 never happened: the switch at 02:00 is taken */
    assert_int_equal(fc_date_parse("2011-03-27", 10, &days), 0);
    assert_int_equal(fc_tz_utc(zone("Europe/Moscow"), days, 9000, &t), 0);
    assert_int_equal(t, at("2011-03-26T23:00:00Z"));

    assert_int_equal(fc_tz_utc(zone("Europe/Moscow"), days, 86400, &t), -1);
}


static void
test_day_bounds_across_moscow_changes(void **state)
{
    (void) state;

    /* the 25-hour day of 2014-10-26 */
    expect_bounds("Europe/Moscow", "2014-10-26T12:00:00Z", FC_PERIOD_DAY,
                  "2014-10-25T20:00:00Z", "2014-10-26T21:00:00Z");

    /* the 23-hour day of 2011-03-27 */
    expect_bounds("Europe/Moscow", "2011-03-27T12:00:00Z", FC_PERIOD_DAY,
                  "2011-03-26T21:00:00Z", "2011-03-27T20:00:00Z");

    /* an instant just before local midnight belongs to that day */
    expect_bounds("Asia/Vladivostok", "2026-12-04T13:59:59Z", FC_PERIOD_DAY,
                  "2026-12-03T14:00:00Z", "2026-12-04T14:00:00Z");
    expect_bounds("Asia/Vladivostok", "2026-12-04T14:00:00Z", FC_PERIOD_DAY,
                  "2026-12-04T14:00:00Z", "2026-12-05T14:00:00Z");
}


static void
test_day_starts_after_a_gap_at_midnight(void **state)
{
    (void) state;

    /* Sao Paulo skipped from 2018-11-04 00:00 to 01:00 */
    expect_bounds("America/Sao_Paulo", "2018-11-04T12:00:00Z",
                  FC_PERIOD_DAY, "2018-11-04T03:00:00Z",
                  "2018-11-05T02:00:00Z");
    expect_bounds("America/Sao_Paulo", "2018-11-03T12:00:00Z",
                  FC_PERIOD_DAY, "2018-11-03T03:00:00Z",
                  "2018-11-04T03:00:00Z");
}


static void
test_calendar_bounds(void **state)
{
    (void) state;

    expect_bounds("Europe/Moscow", "2027-01-01T09:00:00Z", FC_PERIOD_WEEK,
                  "2026-12-27T21:00:00Z", "2027-01-03T21:00:00Z");
    expect_bounds("Asia/Vladivostok", "2026-12-04T12:00:00Z",
                  FC_PERIOD_MONTH, "2026-11-30T14:00:00Z",
                  "2026-12-31T14:00:00Z");
    expect_bounds("Asia/Vladivostok", "2026-12-04T12:00:00Z",
                  FC_PERIOD_QUARTER, "2026-09-30T14:00:00Z",
                  "2026-12-31T14:00:00Z");
    expect_bounds("Asia/Vladivostok", "2026-12-04T12:00:00Z",
                  FC_PERIOD_YEAR, "2025-12-31T14:00:00Z",
                  "2026-12-31T14:00:00Z");
    expect_bounds("Asia/Yekaterinburg", "2026-02-10T00:00:00Z",
                  FC_PERIOD_MONTH, "2026-01-31T19:00:00Z",
                  "2026-02-28T19:00:00Z");
    expect_bounds("Asia/Yekaterinburg", "2028-02-10T00:00:00Z",
                  FC_PERIOD_MONTH, "2028-01-31T19:00:00Z",
                  "2028-02-29T19:00:00Z");

    /* in UTC the same instant is still 2026: the zone decides the year */
    expect_bounds("UTC", "2026-12-31T21:30:00Z", FC_PERIOD_YEAR,
                  "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    expect_bounds("Asia/Vladivostok", "2026-12-31T21:30:00Z",
                  FC_PERIOD_YEAR, "2026-12-31T14:00:00Z",
                  "2027-12-31T14:00:00Z");
}


static void
test_period_keys(void **state)
{
    (void) state;

    expect_key("Europe/Moscow", "2026-12-04T09:00:00Z", FC_PERIOD_DAY,
               "2026-12-04");
    expect_key("Europe/Moscow", "2026-12-04T09:00:00Z", FC_PERIOD_WEEK,
               "2026-W49");
    expect_key("Europe/Moscow", "2026-12-04T09:00:00Z", FC_PERIOD_MONTH,
               "2026-12");
    expect_key("Europe/Moscow", "2026-12-04T09:00:00Z", FC_PERIOD_QUARTER,
               "2026-Q4");
    expect_key("Europe/Moscow", "2026-12-04T09:00:00Z", FC_PERIOD_YEAR,
               "2026");

    /* the same instant is already the next day in Vladivostok */
    expect_key("Asia/Vladivostok", "2026-12-04T20:00:00Z", FC_PERIOD_DAY,
               "2026-12-05");
    expect_key("Europe/Moscow", "2026-12-04T20:00:00Z", FC_PERIOD_DAY,
               "2026-12-04");
    expect_key("Europe/Moscow", "2026-03-31T21:00:00Z", FC_PERIOD_QUARTER,
               "2026-Q2");
}


static void
test_iso_week_year_differs_from_calendar_year(void **state)
{
    (void) state;

    /* 2026 begins on a Thursday, so it has 53 ISO weeks */
    expect_key("Europe/Moscow", "2026-12-31T09:00:00Z", FC_PERIOD_WEEK,
               "2026-W53");
    expect_key("Europe/Moscow", "2027-01-01T09:00:00Z", FC_PERIOD_WEEK,
               "2026-W53");
    expect_key("Europe/Moscow", "2027-01-03T09:00:00Z", FC_PERIOD_WEEK,
               "2026-W53");
    expect_key("Europe/Moscow", "2027-01-04T09:00:00Z", FC_PERIOD_WEEK,
               "2027-W01");

    /* a Monday in December that opens the next ISO year */
    expect_key("Europe/Moscow", "2024-12-30T09:00:00Z", FC_PERIOD_WEEK,
               "2025-W01");

    /* a Sunday in January that closes the previous one */
    expect_key("Europe/Moscow", "2021-01-03T09:00:00Z", FC_PERIOD_WEEK,
               "2020-W53");

    /* one instant: Monday 06:30 in Vladivostok, Sunday 23:30 in Moscow */
    expect_key("Asia/Vladivostok", "2027-01-03T20:30:00Z", FC_PERIOD_WEEK,
               "2027-W01");
    expect_key("Europe/Moscow", "2027-01-03T20:30:00Z", FC_PERIOD_WEEK,
               "2026-W53");
}


static void
test_period_names(void **state)
{
    fc_period_t  p;

    (void) state;

    assert_int_equal(fc_period_parse("quarter", 7, &p), 0);
    assert_int_equal(p, FC_PERIOD_QUARTER);
    assert_int_equal(fc_period_parse("week", 4, &p), 0);
    assert_int_equal(p, FC_PERIOD_WEEK);
    assert_int_equal(fc_period_parse("weeks", 5, &p), -1);
    assert_int_equal(fc_period_parse("", 0, &p), -1);
    assert_string_equal(fc_period_name(FC_PERIOD_YEAR), "year");
    assert_null(fc_period_name((fc_period_t) 42));
}


static void
test_short_key_buffer_is_refused(void **state)
{
    char  buf[8];

    (void) state;

    assert_int_equal(fc_period_key(zone("UTC"), 0, FC_PERIOD_DAY, buf,
                                   sizeof(buf)), -1);
    assert_int_equal(fc_period_key(zone("UTC"), 0, FC_PERIOD_MONTH, buf,
                                   sizeof(buf)), 7);
    assert_string_equal(buf, "1970-01");
}


static int
teardown(void **state)
{
    (void) state;

    fc_tz_cache_free();

    return 0;
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_name_validation),
        cmocka_unit_test(test_load_caches_and_reports_errors),
        cmocka_unit_test(test_moscow_offsets_through_2011_and_2014),
        cmocka_unit_test(test_russian_zones_east),
        cmocka_unit_test(test_footer_dst_rules_of_real_zones),
        cmocka_unit_test(test_footer_rule_forms),
        cmocka_unit_test(test_malformed_data_is_refused),
        cmocka_unit_test(test_version1_data),
        cmocka_unit_test(test_local_time_fields),
        cmocka_unit_test(test_range_is_enforced),
        cmocka_unit_test(test_local_to_utc_resolves_gaps_and_repeats),
        cmocka_unit_test(test_day_bounds_across_moscow_changes),
        cmocka_unit_test(test_day_starts_after_a_gap_at_midnight),
        cmocka_unit_test(test_calendar_bounds),
        cmocka_unit_test(test_period_keys),
        cmocka_unit_test(test_iso_week_year_differs_from_calendar_year),
        cmocka_unit_test(test_period_names),
        cmocka_unit_test(test_short_key_buffer_is_refused),
    };

    return cmocka_run_group_tests(tests, NULL, teardown);
}

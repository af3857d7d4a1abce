/*
 * Gregorian calendar arithmetic on day numbers.
 *
 * The conversions count years from 1 March, so that the leap day is the
 * last day of its "year" and every month length before it is fixed.
 * Within a 400-year cycle (146097 days) the day of the cycle then follows
 * from the year of the cycle with plain integer division, and the month
 * from the day of the March-based year with the 153/5 rule: the months
 * March..January alternate 31 and 30 days in a pattern that
 * (153 * m + 2) / 5 reproduces exactly.
 */

#include <stdio.h>

#include "fc_date.h"


/* days from 0000-03-01 to 1970-01-01 */
#define FC_DAYS_0000_03_01_TO_EPOCH  719468

#define FC_DAYS_PER_400_YEARS        146097


static int64_t fc_floor_div(int64_t a, int64_t b);


int
fc_is_leap_year(int64_t year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}


int
fc_month_days(int64_t year, int month)
{
    static const int  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (month == 2 && fc_is_leap_year(year)) {
        return 29;
    }

    return days[month - 1];
}


int64_t
fc_days_from_civil(int64_t year, int month, int day)
{
    int64_t  y, cycle, yoc, doy, doc, mar;

    y = (month <= 2) ? year - 1 : year;
    mar = (month + 9) % 12;                 /* March = 0 .. February = 11 */

    cycle = fc_floor_div(y, 400);
    yoc = y - cycle * 400;
    doy = (153 * mar + 2) / 5 + day - 1;
    doc = yoc * 365 + yoc / 4 - yoc / 100 + doy;

    return cycle * FC_DAYS_PER_400_YEARS + doc - FC_DAYS_0000_03_01_TO_EPOCH;
}


void
fc_civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
    int64_t  z, cycle, doc, yoc, doy, mar;

    z = days + FC_DAYS_0000_03_01_TO_EPOCH;
    cycle = fc_floor_div(z, FC_DAYS_PER_400_YEARS);
    doc = z - cycle * FC_DAYS_PER_400_YEARS;

    /* remove the leap days before this day to get the year of the cycle */
    yoc = (doc - doc / 1460 + doc / 36524 - doc / 146096) / 365;
    doy = doc - (365 * yoc + yoc / 4 - yoc / 100);
    mar = (5 * doy + 2) / 153;

    *day = (int) (doy - (153 * mar + 2) / 5 + 1);
    *month = (int) (mar < 10 ? mar + 3 : mar - 9);
    *year = yoc + cycle * 400 + (*month <= 2);
}


int
fc_iso_weekday(int64_t days)
{
    int64_t  r;

    /* 1970-01-01 was a Thursday, ISO weekday 4 */
    r = (days + 3) % 7;

    if (r < 0) {
        r += 7;
    }

    return (int) r + 1;
}


int
fc_date_parse(const char *s, size_t len, int64_t *days)
{
    int     i, v[3], n[3] = { 4, 2, 2 }, k;
    size_t  pos;

    if (len != 10 || s[4] != '-' || s[7] != '-') {
        return -1;
    }

    pos = 0;

    for (k = 0; k < 3; k++) {
        v[k] = 0;

        for (i = 0; i < n[k]; i++, pos++) {
            if (s[pos] < '0' || s[pos] > '9') {
                return -1;
            }

            v[k] = v[k] * 10 + (s[pos] - '0');
        }

        pos++;                                  /* the '-' */
    }

    if (v[0] < 1 || v[1] < 1 || v[1] > 12
        || v[2] < 1 || v[2] > fc_month_days(v[0], v[1]))
    {
        return -1;
    }

    *days = fc_days_from_civil(v[0], v[1], v[2]);

    return 0;
}


int
fc_date_format(int64_t days, char *buf, size_t size)
{
    int      month, day, n;
    int64_t  year;

    fc_civil_from_days(days, &year, &month, &day);

    n = snprintf(buf, size, "%04lld-%02d-%02d", (long long) year, month,
                 day);

    if (n < 0 || (size_t) n >= size) {
        return -1;
    }

    return n;
}


static int64_t
fc_floor_div(int64_t a, int64_t b)
{
    int64_t  q;

    q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        q--;
    }

    return q;
}

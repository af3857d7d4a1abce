/*
 * Calendar dates as a count of days.
 *
 * A date is an int64_t number of days since 1970-01-01 in the proleptic
 * Gregorian calendar, so dates compare and subtract as integers.  Which
 * date an instant falls on depends on a time zone: see fc_tz.h.
 */

#ifndef _FC_DATE_H_INCLUDED_
#define _FC_DATE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* "YYYY-MM-DD" plus NUL */
#define FC_DATE_STR_LEN  11

#define FC_SECS_PER_DAY  86400


/* 1 if year is a Gregorian leap year */
int fc_is_leap_year(int64_t year);

/* days in the month (1..12) of year */
int fc_month_days(int64_t year, int month);

/* day number of year-month-day; month and day must be in range */
int64_t fc_days_from_civil(int64_t year, int month, int day);

/* the inverse of fc_days_from_civil */
void fc_civil_from_days(int64_t days, int64_t *year, int *month, int *day);

/* ISO weekday of a day number: 1 = Monday .. 7 = Sunday */
int fc_iso_weekday(int64_t days);

/*
 * Parses exactly "YYYY-MM-DD" (years 0001..9999) into a day number;
 * -1 if the form is wrong or the date does not exist ("2025-02-29").
 */
int fc_date_parse(const char *s, size_t len, int64_t *days);

/* "YYYY-MM-DD" of a day number; length written or -1 if size too small */
int fc_date_format(int64_t days, char *buf, size_t size);


#endif /* _FC_DATE_H_INCLUDED_ */

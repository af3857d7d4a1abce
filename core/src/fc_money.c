/*
 * Checked int64 arithmetic, and parsing and formatting of amounts
 * (kopecks) and volumes (millilitres) written as decimal strings.
 */

#include <string.h>

#include "fc_money.h"


static int fc_decimal_parse(const char *s, size_t len, int frac_max,
    int64_t *out);
static int fc_decimal_format(int64_t v, int frac, char *buf, size_t size);
static size_t fc_group_separator(const char *p, const char *end);


int
fc_add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t  r;

    if (__builtin_add_overflow(a, b, &r)) {
        return -1;
    }

    *out = r;
    return 0;
}


int
fc_sub_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t  r;

    if (__builtin_sub_overflow(a, b, &r)) {
        return -1;
    }

    *out = r;
    return 0;
}


int
fc_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t  r;

    if (__builtin_mul_overflow(a, b, &r)) {
        return -1;
    }

    *out = r;
    return 0;
}


int
fc_mul_div_round(int64_t a, int64_t num, int64_t den, int64_t *out)
{
    __int128  p, q, r;

    if (den == 0) {
        return -1;
    }

    /* int64 * int64 always fits in 127 bits */
    p = (__int128) a * num;

    if (den < 0) {
        p = -p;
        den = -den;
    }

    /* C division truncates toward zero, so r has the sign of p */
    q = p / den;
    r = p % den;

    if (r < 0) {
        r = -r;
    }

    if (2 * r >= den) {
        q += (p < 0) ? -1 : 1;
    }

    if (q > INT64_MAX || q < INT64_MIN) {
        return -1;
    }

    *out = (int64_t) q;
    return 0;
}


int
fc_money_parse(const char *s, size_t len, int64_t *kopecks)
{
    return fc_decimal_parse(s, len, 2, kopecks);
}


int
fc_money_format(int64_t kopecks, char *buf, size_t size)
{
    return fc_decimal_format(kopecks, 2, buf, size);
}


int
fc_volume_parse(const char *s, size_t len, int64_t *ml)
{
    return fc_decimal_parse(s, len, 3, ml);
}


int
fc_volume_format(int64_t ml, char *buf, size_t size)
{
    return fc_decimal_format(ml, 3, buf, size);
}


/*
 * Returns the length of the thousands separator at p (an ASCII space,
 * U+00A0 no-break space or U+202F narrow no-break space, as spreadsheets
 * in Russian locales write them), or 0 if there is none.
 */

static size_t
fc_group_separator(const char *p, const char *end)
{
    const unsigned char  *u = (const unsigned char *) p;

    if (end - p >= 1 && u[0] == ' ') {
        return 1;
    }

    if (end - p >= 2 && u[0] == 0xc2 && u[1] == 0xa0) {
        return 2;
    }

    if (end - p >= 3 && u[0] == 0xe2 && u[1] == 0x80 && u[2] == 0xaf) {
        return 3;
    }

    return 0;
}


/*
 * The value is accumulated as a positive number of the smallest unit and
 * negated at the end, so every step is one checked multiply-add.  Groups
 * are checked strictly ("1 234 567", never "12 34") because a stray blank
 * inside a number in a file more often means two numbers run together.
 */

static int
fc_decimal_parse(const char *s, size_t len, int frac_max, int64_t *out)
{
    int          neg, seen_sep, nfrac;
    size_t       group, sep;
    int64_t      v;
    const char  *p, *end;

    p = s;
    end = s + len;

    if (p == end) {
        return -1;
    }

    neg = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }

    v = 0;
    group = 0;
    seen_sep = 0;

    while (p < end) {

        if (*p >= '0' && *p <= '9') {
            if (fc_mul_i64(v, 10, &v) != 0
                || fc_add_i64(v, *p - '0', &v) != 0)
            {
                return -1;
            }

            group++;
            p++;
            continue;
        }

        sep = fc_group_separator(p, end);

        if (sep == 0) {
            break;
        }

        if (group == 0 || (seen_sep ? group != 3 : group > 3)) {
            return -1;
        }

        seen_sep = 1;
        group = 0;
        p += sep;

        if (p == end || *p < '0' || *p > '9') {
            return -1;
        }
    }

    if (group == 0 || (seen_sep && group != 3)) {
        return -1;
    }

    nfrac = 0;

    if (p < end && (*p == '.' || *p == ',')) {
        p++;

        while (p < end && *p >= '0' && *p <= '9') {
            if (nfrac == frac_max) {
                return -1;
            }

            if (fc_mul_i64(v, 10, &v) != 0
                || fc_add_i64(v, *p - '0', &v) != 0)
            {
                return -1;
            }

            nfrac++;
            p++;
        }

        if (nfrac == 0) {
            return -1;
        }
    }

    if (p != end) {
        return -1;
    }

    for ( /* void */ ; nfrac < frac_max; nfrac++) {
        if (fc_mul_i64(v, 10, &v) != 0) {
            return -1;
        }
    }

    *out = neg ? -v : v;
    return 0;
}


static int
fc_decimal_format(int64_t v, int frac, char *buf, size_t size)
{
    int        n, i;
    char       tmp[FC_MONEY_STR_LEN];
    uint64_t   m;

    /* the magnitude as unsigned, so that INT64_MIN is printable too */
    m = (v < 0) ? 0 - (uint64_t) v : (uint64_t) v;

    n = 0;

    for (i = 0; i < frac; i++) {
        tmp[n++] = (char) ('0' + m % 10);
        m /= 10;
    }

    tmp[n++] = '.';

    do {
        tmp[n++] = (char) ('0' + m % 10);
        m /= 10;
    } while (m != 0);

    if (v < 0) {
        tmp[n++] = '-';
    }

    if ((size_t) n + 1 > size) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        buf[i] = tmp[n - 1 - i];
    }

    buf[n] = '\0';

    return n;
}

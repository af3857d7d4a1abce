/*
 * Luhn checksum and display masking of card numbers.
 */

#include "fc_pan.h"


static int fc_all_digits(const char *s, size_t len);
static int fc_luhn_sum(const char *s, size_t len, int double_last);


int
fc_luhn_check(const char *s, size_t len)
{
    if (len == 0 || !fc_all_digits(s, len)) {
        return 0;
    }

    return fc_luhn_sum(s, len, 0) % 10 == 0;
}


int
fc_luhn_digit(const char *s, size_t len)
{
    if (len == 0 || !fc_all_digits(s, len)) {
        return -1;
    }

    /* the digit to come is not doubled, so the last one given is */
    return (10 - fc_luhn_sum(s, len, 1) % 10) % 10;
}


int
fc_pan_valid(const char *s, size_t len)
{
    if (len < FC_PAN_MIN_LEN || len > FC_PAN_MAX_LEN) {
        return 0;
    }

    return fc_luhn_check(s, len);
}


int
fc_pan_mask(const char *s, size_t len, char *out, size_t size)
{
    size_t  i;

    if (len < FC_PAN_MIN_LEN || len > FC_PAN_MAX_LEN
        || !fc_all_digits(s, len) || size < len + 1)
    {
        return -1;
    }

    for (i = 0; i < len; i++) {
        out[i] = (i < 6 || i >= len - 4) ? s[i] : '*';
    }

    out[len] = '\0';

    return (int) len;
}


static int
fc_all_digits(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/*
 * Sums the digits from the right, doubling every second one (and taking
 * the digit sum of a doubled value); double_last says whether the
 * rightmost digit given is one of the doubled ones.
 */

static int
fc_luhn_sum(const char *s, size_t len, int double_last)
{
    int     sum, d, dbl;
    size_t  i;

    sum = 0;
    dbl = double_last;

    for (i = len; i > 0; i--) {
        d = s[i - 1] - '0';

        if (dbl) {
            d *= 2;

            if (d > 9) {
                d -= 9;
            }
        }

        sum += d;
        dbl = !dbl;
    }

    return sum;
}

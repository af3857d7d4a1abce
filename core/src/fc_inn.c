/*
 * INN check digits and the KPP format.
 */

#include "fc_inn.h"


static int fc_inn_check_digit(const char *s, const int *weights, size_t n);


/* weights of the one check digit of a 10-digit INN */
static const int  fc_inn10_weights[] = { 2, 4, 10, 3, 5, 9, 4, 6, 8 };

/* weights of the 11th and 12th digits of a 12-digit INN */
static const int  fc_inn11_weights[] = { 7, 2, 4, 10, 3, 5, 9, 4, 6, 8 };
static const int  fc_inn12_weights[] = { 3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8 };


int
fc_inn_valid(const char *s, size_t len)
{
    size_t  i;

    if (len != 10 && len != 12) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    if (len == 10) {
        return fc_inn_check_digit(s, fc_inn10_weights, 9) == s[9] - '0';
    }

    return fc_inn_check_digit(s, fc_inn11_weights, 10) == s[10] - '0'
           && fc_inn_check_digit(s, fc_inn12_weights, 11) == s[11] - '0';
}


int
fc_kpp_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len != 9) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c >= '0' && c <= '9') {
            continue;
        }

        /* positions 5 and 6, the reason code, may hold letters */
        if ((i == 4 || i == 5) && c >= 'A' && c <= 'Z') {
            continue;
        }

        return 0;
    }

    return 1;
}


static int
fc_inn_check_digit(const char *s, const int *weights, size_t n)
{
    int     sum;
    size_t  i;

    sum = 0;

    for (i = 0; i < n; i++) {
        sum += weights[i] * (s[i] - '0');
    }

    return sum % 11 % 10;
}

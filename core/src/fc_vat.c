/*
 * The dated VAT table.
 */

#include <stdio.h>
#include <string.h>

#include "fc_date.h"
#include "fc_money.h"
#include "fc_vat.h"


/* at most this many bytes of a bad field are quoted in a message */
#define FC_VAT_FIELD_QUOTE  32

#define FC_VAT_QUOTE(f)                                                     \
    (int) ((f).len < FC_VAT_FIELD_QUOTE ? (f).len : FC_VAT_FIELD_QUOTE)

#define FC_VAT_FIELDS       4


typedef struct {
    const char  *data;
    size_t       len;
} fc_vat_field_t;


static int fc_vat_number(const char *s, size_t len, int64_t max,
    int64_t *n);


void
fc_vat_table_init(fc_vat_table_t *table)
{
    memset(table, 0, sizeof(fc_vat_table_t));
}


int
fc_vat_table_add(fc_vat_table_t *table, const char *line, size_t len,
    char *err, size_t errlen)
{
    size_t           i, k, nf;
    int64_t          rate;
    const char      *p, *end, *slash;
    fc_vat_rate_t    e;
    fc_vat_field_t   f[FC_VAT_FIELDS];

    p = line;
    end = line + len;
    nf = 0;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == end) {
            break;
        }

        if (nf == FC_VAT_FIELDS) {
            snprintf(err, errlen, "VAT entry \"%.*s\" has more than %d "
                     "fields", (int) len, line, FC_VAT_FIELDS);
            return -1;
        }

        f[nf].data = p;

        while (p < end && *p != ' ' && *p != '\t') {
            p++;
        }

        f[nf].len = (size_t) (p - f[nf].data);
        nf++;
    }

    if (nf != FC_VAT_FIELDS) {
        snprintf(err, errlen, "VAT entry \"%.*s\" must read \"<YYYY-MM-DD> "
                 "<rate> <num>/<den> <code>\"", (int) len, line);
        return -1;
    }

    memset(&e, 0, sizeof(fc_vat_rate_t));

    if (fc_date_parse(f[0].data, f[0].len, &e.valid_from) != 0) {
        snprintf(err, errlen, "invalid VAT date \"%.*s\"",
                 FC_VAT_QUOTE(f[0]), f[0].data);
        return -1;
    }

    if (fc_vat_number(f[1].data, f[1].len, 99, &rate) != 0) {
        snprintf(err, errlen, "invalid VAT rate \"%.*s\"",
                 FC_VAT_QUOTE(f[1]), f[1].data);
        return -1;
    }

    e.rate = (int) rate;

    slash = memchr(f[2].data, '/', f[2].len);

    if (slash == NULL
        || fc_vat_number(f[2].data, (size_t) (slash - f[2].data), 1000000,
                         &e.num) != 0
        || fc_vat_number(slash + 1, f[2].len - (size_t) (slash + 1
                                                         - f[2].data),
                         1000000, &e.den) != 0
        || e.den == 0)
    {
        snprintf(err, errlen, "invalid VAT calculated rate \"%.*s\"",
                 FC_VAT_QUOTE(f[2]), f[2].data);
        return -1;
    }

    if (e.num * (100 + e.rate) != e.rate * e.den) {
        snprintf(err, errlen, "VAT calculated rate \"%.*s\" is not "
                 "%d/(100+%d)", FC_VAT_QUOTE(f[2]), f[2].data, e.rate,
                 e.rate);
        return -1;
    }

    if (f[3].len == 0 || f[3].len >= FC_VAT_CODE_LEN) {
        goto bad_code;
    }

    for (i = 0; i < f[3].len; i++) {
        if (!((f[3].data[i] >= 'a' && f[3].data[i] <= 'z')
              || (f[3].data[i] >= '0' && f[3].data[i] <= '9')
              || f[3].data[i] == '_'))
        {
            goto bad_code;
        }
    }

    memcpy(e.code, f[3].data, f[3].len);

    if (table->n == FC_VAT_MAX) {
        snprintf(err, errlen, "too many VAT entries, at most %d",
                 FC_VAT_MAX);
        return -1;
    }

    for (k = 0; k < table->n; k++) {
        if (table->rates[k].valid_from == e.valid_from) {
            snprintf(err, errlen, "duplicate VAT date \"%.*s\"",
                     FC_VAT_QUOTE(f[0]), f[0].data);
            return -1;
        }

        if (table->rates[k].valid_from > e.valid_from) {
            break;
        }
    }

    memmove(&table->rates[k + 1], &table->rates[k],
            (table->n - k) * sizeof(fc_vat_rate_t));
    table->rates[k] = e;
    table->n++;

    return 0;

bad_code:

    snprintf(err, errlen, "invalid VAT code \"%.*s\"", FC_VAT_QUOTE(f[3]),
             f[3].data);

    return -1;
}


const fc_vat_rate_t *
fc_vat_find(const fc_vat_table_t *table, int64_t day)
{
    size_t                k;
    const fc_vat_rate_t  *found;

    found = NULL;

    for (k = 0; k < table->n && table->rates[k].valid_from <= day; k++) {
        found = &table->rates[k];
    }

    return found;
}


int
fc_vat_amount(const fc_vat_rate_t *rate, int64_t amount, int64_t *vat)
{
    return fc_mul_div_round(amount, rate->num, rate->den, vat);
}


/* a decimal number 0..max without sign or leading zeros */

static int
fc_vat_number(const char *s, size_t len, int64_t max, int64_t *n)
{
    size_t   i;
    int64_t  v;

    if (len == 0 || (len > 1 && s[0] == '0')) {
        return -1;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        v = v * 10 + (s[i] - '0');

        if (v > max) {
            return -1;
        }
    }

    *n = v;

    return 0;
}

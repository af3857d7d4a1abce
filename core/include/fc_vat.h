/*
 * VAT rates by date, and the VAT contained in an amount.
 *
 * A fuel-card top-up is an advance payment, so its receipt shows VAT at
 * the calculated rate (22/122 for 22 %), taken out of the VAT-inclusive
 * amount.  Rates change by law on a given date (20 % until 2025-12-31,
 * 22 % from 2026-01-01), so they are a dated table from configuration,
 * and a payment takes the rate in force on its date.
 *
 * One table entry is one line of text, fields separated by blanks:
 *
 *     <valid from>  <rate %>  <num>/<den>  <receipt code>
 *     2019-01-01    20        20/120       vat120
 *     2026-01-01    22        22/122       vat122
 *
 * valid from is YYYY-MM-DD; the rate is a whole percentage 0..99; the
 * calculated rate num/den must equal rate / (100 + rate), which catches
 * a mistyped line; the code (1 to 15 of [a-z0-9_]) is what the cash
 * register API calls the rate.  An entry is in force from its date until
 * the next entry's date.
 */

#ifndef _FC_VAT_H_INCLUDED_
#define _FC_VAT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define FC_VAT_MAX       16             /* entries in a table */
#define FC_VAT_CODE_LEN  16             /* code, with the NUL */


typedef struct {
    int64_t      valid_from;            /* day number, see fc_date.h */
    int          rate;                  /* percent */
    int64_t      num;                   /* the calculated rate num/den */
    int64_t      den;
    char         code[FC_VAT_CODE_LEN];
} fc_vat_rate_t;

typedef struct {
    size_t         n;
    fc_vat_rate_t  rates[FC_VAT_MAX];   /* ascending by valid_from */
} fc_vat_table_t;


/* empties the table; it needs no other setup and no release */
void fc_vat_table_init(fc_vat_table_t *table);

/*
 * Parses one entry (see above) and inserts it in date order.  Returns 0,
 * or -1 with a message quoting the bad field in err: bad syntax, a
 * calculated rate that does not match the rate, a date already in the
 * table, or a full table.
 */
int fc_vat_table_add(fc_vat_table_t *table, const char *line, size_t len,
    char *err, size_t errlen);

/* the entry in force on the day number day, or NULL if none is yet */
const fc_vat_rate_t *fc_vat_find(const fc_vat_table_t *table, int64_t day);

/*
 * *vat = the VAT contained in the VAT-inclusive amount (kopecks):
 * amount * num / den, rounded half away from zero; 0 or -1 on overflow.
 */
int fc_vat_amount(const fc_vat_rate_t *rate, int64_t amount, int64_t *vat);


#endif /* _FC_VAT_H_INCLUDED_ */

/*
 * Money and volume as integers.
 *
 * Every amount in the platform is an int64_t of kopecks and every volume
 * an int64_t of millilitres; there is no floating point anywhere.  The
 * helpers below are the only way amounts are added, multiplied, parsed
 * and printed, so that an overflow is always detected and reported
 * instead of wrapping.
 *
 * All functions return 0 on success and -1 on failure (overflow or bad
 * input); on failure *out is left unchanged.
 */

#ifndef _FC_MONEY_H_INCLUDED_
#define _FC_MONEY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* longest formatted int64 amount, "-92233720368547758.08", plus NUL */
#define FC_MONEY_STR_LEN   24

/* longest formatted int64 volume, "-9223372036854775.808", plus NUL */
#define FC_VOLUME_STR_LEN  24


/* *out = a + b; -1 if the result does not fit in int64 */
int fc_add_i64(int64_t a, int64_t b, int64_t *out);

/* *out = a - b; -1 if the result does not fit in int64 */
int fc_sub_i64(int64_t a, int64_t b, int64_t *out);

/* *out = a * b; -1 if the result does not fit in int64 */
int fc_mul_i64(int64_t a, int64_t b, int64_t *out);

/*
 * *out = a * num / den, rounded to the nearest integer with halves
 * rounded away from zero: 2.5 -> 3 and -2.5 -> -3.  Rounding is thus
 * symmetric, so the share of a refund is exactly the negated share of
 * the payment it reverses.  The product is computed in 128 bits, so it
 * cannot overflow for any int64 operands; -1 if den is 0 or the result
 * does not fit in int64.
 */
int fc_mul_div_round(int64_t a, int64_t num, int64_t den, int64_t *out);

/*
 * Parses an amount of roubles into kopecks.  Accepted: an optional '-',
 * an integer part of digits, optionally grouped by thousands with a
 * space or a UTF-8 no-break space ("1 234"), then optionally '.' or ','
 * and one or two digits.  So "1234.56", "1234,56", "1 234,56", "1234"
 * and "-12.5" are valid; three decimals, an empty string, surrounding
 * blanks, "1234." or ".5" are not.  -1 on bad input or overflow.
 */
int fc_money_parse(const char *s, size_t len, int64_t *kopecks);

/*
 * Formats kopecks as roubles with two decimals and '.' ("1234.56",
 * "-0.05") into buf.  Returns the length written (without the NUL), or
 * -1 if buf is smaller than needed; FC_MONEY_STR_LEN is always enough.
 */
int fc_money_format(int64_t kopecks, char *buf, size_t size);

/*
 * Parses litres with up to three decimals ("60", "60.5", "60,000") into
 * millilitres, with the same syntax rules as fc_money_parse.
 */
int fc_volume_parse(const char *s, size_t len, int64_t *ml);

/* formats millilitres as litres with three decimals: "60.000" */
int fc_volume_format(int64_t ml, char *buf, size_t size);


#endif /* _FC_MONEY_H_INCLUDED_ */

/*
 * Card numbers (PANs): Luhn check, validation and masking.
 *
 * A full PAN must never reach a log, a response or a table that is not
 * meant for it; fc_pan_mask() is the one form in which a number may be
 * shown.  Inputs are (pointer, length) so that strings taken straight
 * from a request need no copy.
 */

#ifndef _FC_PAN_H_INCLUDED_
#define _FC_PAN_H_INCLUDED_


#include <stddef.h>


#define FC_PAN_MIN_LEN   16
#define FC_PAN_MAX_LEN   19

/* the masked form of the longest PAN plus NUL */
#define FC_PAN_MASKED_LEN  (FC_PAN_MAX_LEN + 1)


/*
 * 1 if s is one or more ASCII digits whose Luhn (mod 10) checksum is
 * valid, the last digit being the check digit; 0 otherwise.
 */
int fc_luhn_check(const char *s, size_t len);

/*
 * The check digit (0..9) that would make the digits s valid when
 * appended to them, or -1 if s is empty or not all digits.
 */
int fc_luhn_digit(const char *s, size_t len);

/* 1 if s is 16 to 19 ASCII digits with a valid Luhn checksum, else 0 */
int fc_pan_valid(const char *s, size_t len);

/*
 * Writes the display form of a PAN: the first six digits, a '*' for
 * every hidden digit, the last four ("700583******1234").  Only the
 * digit count is checked (16 to 19), not the checksum, because a
 * mistyped number must be hidden as well.  Returns the length written
 * or -1 if s is not 16 to 19 digits or size is too small.
 */
int fc_pan_mask(const char *s, size_t len, char *out, size_t size);


#endif /* _FC_PAN_H_INCLUDED_ */

/*
 * Russian taxpayer identifiers: INN (ИНН) and KPP (КПП).
 *
 * An INN is 10 digits for an organisation, with one check digit, or 12
 * digits for a person or sole trader, with two.  Each check digit is a
 * weighted sum of the digits before it, modulo 11, then modulo 10.  A
 * KPP is 9 characters: a 4-digit tax office code, a 2-character reason
 * code (digits or capital Latin letters) and a 3-digit serial number.
 */

#ifndef _FC_INN_H_INCLUDED_
#define _FC_INN_H_INCLUDED_


#include <stddef.h>


/* 1 if s is a 10- or 12-digit INN with valid check digits, else 0 */
int fc_inn_valid(const char *s, size_t len);

/* 1 if s has the form of a KPP: 4 digits, 2 of [0-9A-Z], 3 digits */
int fc_kpp_valid(const char *s, size_t len);


#endif /* _FC_INN_H_INCLUDED_ */

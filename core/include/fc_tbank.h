/*
 * T-Bank internet acquiring: the Token that signs requests and
 * notifications.
 *
 * The Token is SHA-256, in lowercase hex, over the values of the
 * object's root-level scalar fields plus the pair Password = the
 * terminal's secret, concatenated without separators in the byte order
 * of their keys.  Strings take part as they are, integers in decimal,
 * booleans as "true" / "false"; nulls, nested objects and arrays (such
 * as Receipt, DATA) and the Token field itself are left out.
 *
 * A field holding a JSON real makes both functions fail: the bank's text
 * form of such a number cannot be reproduced reliably, and no field of
 * the protocol is a real, so it signals a malformed message.  So does a
 * field named Password, which would otherwise let a sender choose what
 * the secret is compared with.
 */

#ifndef _FC_TBANK_H_INCLUDED_
#define _FC_TBANK_H_INCLUDED_


#include <jansson.h>


/* 64 hex digits plus NUL */
#define FC_TBANK_TOKEN_LEN  65


/*
 * Computes the Token of obj with the terminal password into out,
 * NUL-terminated.  Returns 0, or -1 if obj is not an object, holds a
 * real or a Password field, or memory runs out.
 */
int fc_tbank_token(const json_t *obj, const char *password,
    char out[FC_TBANK_TOKEN_LEN]);

/*
 * Checks the Token field of a received notification in constant time
 * (hex digits compared without regard to case).  Returns 1 if it is
 * valid, 0 if it is missing, malformed or wrong, -1 if the Token cannot
 * be computed (as for fc_tbank_token).
 */
int fc_tbank_token_verify(const json_t *obj, const char *password);


#endif /* _FC_TBANK_H_INCLUDED_ */

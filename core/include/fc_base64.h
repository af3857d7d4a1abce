/*
 * Standard base64 (RFC 4648, section 4) with '=' padding.
 */

#ifndef _FC_BASE64_H_INCLUDED_
#define _FC_BASE64_H_INCLUDED_


#include <stddef.h>


/* encoded length of n bytes, without the NUL */
#define FC_BASE64_LEN(n)  (((n) + 2) / 3 * 4)


/*
 * Encodes len bytes and NUL-terminates the result; returns its length,
 * or -1 if size is smaller than FC_BASE64_LEN(len) + 1.
 */
int fc_base64_encode(const unsigned char *src, size_t len, char *dst,
    size_t size);

/*
 * Decodes canonical padded base64: the length a multiple of 4, no
 * blanks, unused bits of the last character zero.  Returns the number of
 * bytes written, or -1 on malformed input or if size is too small.
 */
int fc_base64_decode(const char *src, size_t len, unsigned char *dst,
    size_t size);


#endif /* _FC_BASE64_H_INCLUDED_ */

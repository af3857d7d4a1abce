/*
 * Windows-1251 (cp1251), the Cyrillic code page of Russian Excel, of
 * 1C's file loaders and of bank statement files, to and from UTF-8.
 *
 * Encoding writes what an accountant's tools can read: a character
 * that cp1251 lacks (a Latin letter with a diacritic, a CJK character,
 * an emoji) becomes '?', and the caller learns how many did.  Input
 * that is not UTF-8 at all is refused, never guessed at.
 *
 * Decoding is strict: byte 0x98, the one byte cp1251 leaves unassigned,
 * is refused, so that a file in some other encoding is noticed rather
 * than turned into plausible garbage.
 *
 * Both directions return 0, or -1 with *n set to the offset in src of
 * the first byte that could not be converted (size too small: the
 * offset of the first character that did not fit).
 */

#ifndef _FC_CP1251_H_INCLUDED_
#define _FC_CP1251_H_INCLUDED_


#include <stddef.h>


/* what a character without a cp1251 byte is written as */
#define FC_CP1251_REPLACEMENT  '?'

/* the most bytes of UTF-8 that len bytes of cp1251 decode to */
#define FC_CP1251_UTF8_LEN(len)  ((len) * 3)


/*
 * Encodes len bytes of UTF-8 as cp1251 into dst, whose size must be at
 * least len for the whole text to fit (cp1251 is never longer).  dst may
 * be src itself: the conversion then happens in place.  On success *n is
 * the number of bytes written and *replaced (if not NULL) the number of
 * characters written as FC_CP1251_REPLACEMENT.  -1 when src is not
 * UTF-8: a stray continuation byte, a truncated sequence, an overlong
 * form, a surrogate, or a code point above U+10FFFF.
 */
int fc_cp1251_encode(const unsigned char *src, size_t len,
    unsigned char *dst, size_t size, size_t *n, size_t *replaced);

/*
 * Decodes len bytes of cp1251 into UTF-8 at dst;
 * FC_CP1251_UTF8_LEN(len) bytes are always enough.  On success *n is the
 * number of bytes written.  -1 on the unassigned byte 0x98.
 */
int fc_cp1251_decode(const unsigned char *src, size_t len,
    unsigned char *dst, size_t size, size_t *n);


#endif /* _FC_CP1251_H_INCLUDED_ */

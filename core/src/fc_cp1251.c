/*
 * Windows-1251 to and from UTF-8.
 *
 * The lower half of cp1251 is ASCII and its last 64 bytes are the
 * Russian alphabet in order (0xC0 'А' = U+0410 .. 0xFF 'я' = U+044F), so
 * only the 64 bytes 0x80-0xBF need a table: the other Cyrillic letters
 * (Ё, Ђ, Ї, Ў...), typographic quotes and dashes, '№', the euro sign.
 * Encoding looks a code point up in that table by a linear search; the
 * common case, ASCII and Russian letters, never reaches it.
 */

#include <stdint.h>

#include "fc_cp1251.h"


#define FC_CP1251_UNASSIGNED  0x98

#define FC_CP1251_UPPER_FIRST 0x410        /* U+0410 'А' is 0xC0 */
#define FC_CP1251_UPPER_LAST  0x44f        /* U+044F 'я' is 0xFF */


static uint32_t fc_cp1251_utf8_next(const unsigned char *p, size_t len,
    size_t *used);
static int fc_cp1251_byte(uint32_t cp);


/* the code points of bytes 0x80-0xBF; 0 for the unassigned 0x98 */
static const uint16_t  fc_cp1251_high[64] = {
    0x0402, 0x0403, 0x201a, 0x0453, 0x201e, 0x2026, 0x2020, 0x2021,
    0x20ac, 0x2030, 0x0409, 0x2039, 0x040a, 0x040c, 0x040b, 0x040f,
    0x0452, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x0000, 0x2122, 0x0459, 0x203a, 0x045a, 0x045c, 0x045b, 0x045f,
    0x00a0, 0x040e, 0x045e, 0x0408, 0x00a4, 0x0490, 0x00a6, 0x00a7,
    0x0401, 0x00a9, 0x0404, 0x00ab, 0x00ac, 0x00ad, 0x00ae, 0x0407,
    0x00b0, 0x00b1, 0x0406, 0x0456, 0x0491, 0x00b5, 0x00b6, 0x00b7,
    0x0451, 0x2116, 0x0454, 0x00bb, 0x0458, 0x0405, 0x0455, 0x0457
};


int
fc_cp1251_encode(const unsigned char *src, size_t len, unsigned char *dst,
    size_t size, size_t *n, size_t *replaced)
{
    int       b;
    size_t    i, out, used, bad;
    uint32_t  cp;

    out = 0;
    bad = 0;

    for (i = 0; i < len; i += used) {

        if (src[i] < 0x80) {
            cp = src[i];
            used = 1;

        } else {
            cp = fc_cp1251_utf8_next(src + i, len - i, &used);

            if (cp == UINT32_MAX) {
                *n = i;
                return -1;
            }
        }

        if (out == size) {
            *n = i;
            return -1;
        }

        /* out <= i always holds, so writing in place never overtakes */

        if (cp < 0x80) {
            dst[out++] = (unsigned char) cp;
            continue;
        }

        b = fc_cp1251_byte(cp);

        if (b < 0) {
            b = FC_CP1251_REPLACEMENT;
            bad++;
        }

        dst[out++] = (unsigned char) b;
    }

    *n = out;

    if (replaced) {
        *replaced = bad;
    }

    return 0;
}


int
fc_cp1251_decode(const unsigned char *src, size_t len, unsigned char *dst,
    size_t size, size_t *n)
{
    size_t    i, out, need;
    uint32_t  cp;

    out = 0;

    for (i = 0; i < len; i++) {

        if (src[i] < 0x80) {
            cp = src[i];

        } else if (src[i] >= 0xc0) {
            cp = FC_CP1251_UPPER_FIRST + (src[i] - 0xc0);

        } else if (src[i] == FC_CP1251_UNASSIGNED) {
            *n = i;
            return -1;

        } else {
            cp = fc_cp1251_high[src[i] - 0x80];
        }

        need = (cp < 0x80) ? 1 : (cp < 0x800) ? 2 : 3;

        if (size - out < need) {
            *n = i;
            return -1;
        }

        if (need == 1) {
            dst[out++] = (unsigned char) cp;

        } else if (need == 2) {
            dst[out++] = (unsigned char) (0xc0 | (cp >> 6));
            dst[out++] = (unsigned char) (0x80 | (cp & 0x3f));

        } else {
            dst[out++] = (unsigned char) (0xe0 | (cp >> 12));
            dst[out++] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
            dst[out++] = (unsigned char) (0x80 | (cp & 0x3f));
        }
    }

    *n = out;

    return 0;
}


/*
 * Decodes the multi-byte UTF-8 sequence at p (p[0] >= 0x80): returns its
 * code point and sets *used to its length, or returns UINT32_MAX when it
 * is not well-formed UTF-8 (RFC 3629: shortest form only, no surrogates,
 * nothing above U+10FFFF).
 */
static uint32_t
fc_cp1251_utf8_next(const unsigned char *p, size_t len, size_t *used)
{
    size_t    k, need;
    uint32_t  cp, min;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2;
        cp = p[0] & 0x1f;
        min = 0x80;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;
        cp = p[0] & 0x0f;
        min = 0x800;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;
        cp = p[0] & 0x07;
        min = 0x10000;

    } else {
        /* a continuation byte, 0xc0/0xc1 (always overlong), 0xf5-0xff */
        return UINT32_MAX;
    }

    if (len < need) {
        return UINT32_MAX;
    }

    for (k = 1; k < need; k++) {
        if ((p[k] & 0xc0) != 0x80) {
            return UINT32_MAX;
        }

        cp = (cp << 6) | (p[k] & 0x3f);
    }

    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return UINT32_MAX;
    }

    *used = need;

    return cp;
}


/* the cp1251 byte of a code point at or above U+0080, or -1 if none */
static int
fc_cp1251_byte(uint32_t cp)
{
    int  i;

    if (cp >= FC_CP1251_UPPER_FIRST && cp <= FC_CP1251_UPPER_LAST) {
        return 0xc0 + (int) (cp - FC_CP1251_UPPER_FIRST);
    }

    for (i = 0; i < 64; i++) {
        if (fc_cp1251_high[i] == cp) {
            return 0x80 + i;
        }
    }

    return -1;
}

/*
 * base64 encoding and strict decoding.
 *
 * Decoding is strict on purpose: the decoded data are salts and hashes
 * compared byte for byte, so every string must have exactly one
 * accepted spelling.
 */

#include <stdint.h>

#include "fc_base64.h"


static int fc_base64_value(char c);


static const char  fc_base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


int
fc_base64_encode(const unsigned char *src, size_t len, char *dst,
    size_t size)
{
    size_t    i, n;
    uint32_t  v;

    if (size < FC_BASE64_LEN(len) + 1) {
        return -1;
    }

    n = 0;

    for (i = 0; i + 3 <= len; i += 3) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8 | src[i + 2];

        dst[n++] = fc_base64_alphabet[v >> 18];
        dst[n++] = fc_base64_alphabet[(v >> 12) & 0x3f];
        dst[n++] = fc_base64_alphabet[(v >> 6) & 0x3f];
        dst[n++] = fc_base64_alphabet[v & 0x3f];
    }

    if (len - i == 1) {
        v = (uint32_t) src[i] << 16;

        dst[n++] = fc_base64_alphabet[v >> 18];
        dst[n++] = fc_base64_alphabet[(v >> 12) & 0x3f];
        dst[n++] = '=';
        dst[n++] = '=';

    } else if (len - i == 2) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8;

        dst[n++] = fc_base64_alphabet[v >> 18];
        dst[n++] = fc_base64_alphabet[(v >> 12) & 0x3f];
        dst[n++] = fc_base64_alphabet[(v >> 6) & 0x3f];
        dst[n++] = '=';
    }

    dst[n] = '\0';

    return (int) n;
}


int
fc_base64_decode(const char *src, size_t len, unsigned char *dst,
    size_t size)
{
    int       c[4], k, pad;
    size_t    i, n;
    uint32_t  v;

    if (len % 4 != 0) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i += 4) {
        pad = 0;

        for (k = 0; k < 4; k++) {
            /* '=' only as the last one or two characters of the input */
            if (src[i + k] == '=' && i + 4 == len && k >= 2
                && (k == 3 || src[i + 3] == '='))
            {
                c[k] = 0;
                pad++;
                continue;
            }

            c[k] = fc_base64_value(src[i + k]);

            if (c[k] < 0 || pad != 0) {
                return -1;
            }
        }

        v = (uint32_t) c[0] << 18 | (uint32_t) c[1] << 12
            | (uint32_t) c[2] << 6 | (uint32_t) c[3];

        if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0))
        {
            return -1;
        }

        if (n + 3 - pad > size) {
            return -1;
        }

        dst[n++] = (unsigned char) (v >> 16);

        if (pad < 2) {
            dst[n++] = (unsigned char) (v >> 8);
        }

        if (pad < 1) {
            dst[n++] = (unsigned char) v;
        }
    }

    return (int) n;
}


static int
fc_base64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '+') {
        return 62;
    }

    if (c == '/') {
        return 63;
    }

    return -1;
}

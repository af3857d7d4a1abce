/*
 * Writing JSON text into a caller's buffer.
 */

#include <stdio.h>
#include <string.h>

#include "fc_json.h"
#include "fc_money.h"


static void fc_json_member(fc_json_t *json, const char *key);
static void fc_json_close(fc_json_t *json, char bracket);
static void fc_json_append(fc_json_t *json, const char *s, size_t len);
static void fc_json_quoted(fc_json_t *json, const char *s, size_t len);


void
fc_json_init(fc_json_t *json, char *buf, size_t size)
{
    json->buf = buf;
    json->size = size;
    json->len = 0;
    json->depth = 0;
    json->started = 0;
    json->failed = (size == 0);

    if (size > 0) {
        buf[0] = '\0';
    }
}


void
fc_json_object(fc_json_t *json, const char *key)
{
    fc_json_member(json, key);

    if (json->depth + 1 >= FC_JSON_DEPTH_MAX) {
        json->failed = 1;
    }

    fc_json_append(json, "{", 1);

    if (!json->failed) {
        json->depth++;
        json->started &= ~(1u << json->depth);
    }
}


void
fc_json_object_end(fc_json_t *json)
{
    fc_json_close(json, '}');
}


void
fc_json_array(fc_json_t *json, const char *key)
{
    fc_json_member(json, key);

    if (json->depth + 1 >= FC_JSON_DEPTH_MAX) {
        json->failed = 1;
    }

    fc_json_append(json, "[", 1);

    if (!json->failed) {
        json->depth++;
        json->started &= ~(1u << json->depth);
    }
}


void
fc_json_array_end(fc_json_t *json)
{
    fc_json_close(json, ']');
}


void
fc_json_str(fc_json_t *json, const char *key, const char *s, size_t len)
{
    fc_json_member(json, key);
    fc_json_quoted(json, s, len);
}


void
fc_json_cstr(fc_json_t *json, const char *key, const char *s)
{
    fc_json_str(json, key, s, strlen(s));
}


void
fc_json_int(fc_json_t *json, const char *key, int64_t n)
{
    int   len;
    char  buf[24];

    fc_json_member(json, key);
    len = snprintf(buf, sizeof(buf), "%lld", (long long) n);
    fc_json_append(json, buf, (size_t) len);
}


void
fc_json_money(fc_json_t *json, const char *key, int64_t kopecks)
{
    int   len;
    char  buf[FC_MONEY_STR_LEN];

    fc_json_member(json, key);
    len = fc_money_format(kopecks, buf, sizeof(buf));

    if (len < 0) {
        json->failed = 1;
        return;
    }

    fc_json_append(json, buf, (size_t) len);
}


void
fc_json_null(fc_json_t *json, const char *key)
{
    fc_json_member(json, key);
    fc_json_append(json, "null", 4);
}


int
fc_json_finish(fc_json_t *json)
{
    if (json->failed || json->depth != 0 || !(json->started & 1u)) {
        return -1;
    }

    return (int) json->len;
}


/*
 * Writes what goes before a value: the comma after the previous member
 * of the same object or array, and the key inside an object.  A key
 * where none is expected, or none where one is, is not checked: the
 * builders are ours, and their tests see the text.
 */

static void
fc_json_member(fc_json_t *json, const char *key)
{
    unsigned  bit;

    if (json->failed) {
        return;
    }

    bit = 1u << json->depth;

    if (json->started & bit) {
        if (json->depth == 0) {
            /* a second value at the top is not JSON */
            json->failed = 1;
            return;
        }

        fc_json_append(json, ",", 1);
    }

    json->started |= bit;

    if (key != NULL) {
        fc_json_quoted(json, key, strlen(key));
        fc_json_append(json, ":", 1);
    }
}


static void
fc_json_close(fc_json_t *json, char bracket)
{
    if (json->failed) {
        return;
    }

    if (json->depth == 0) {
        json->failed = 1;
        return;
    }

    json->depth--;
    fc_json_append(json, &bracket, 1);
}


/* keeps the text NUL-terminated; a write that does not fit fails all */

static void
fc_json_append(fc_json_t *json, const char *s, size_t len)
{
    if (json->failed) {
        return;
    }

    if (len >= json->size - json->len) {
        json->failed = 1;
        return;
    }

    memcpy(json->buf + json->len, s, len);
    json->len += len;
    json->buf[json->len] = '\0';
}


/*
 * The quote, backslash and control characters are escaped, everything
 * else (UTF-8 included) is copied: a receipt's Cyrillic item name stays
 * readable in the cash register's log.
 */

static void
fc_json_quoted(fc_json_t *json, const char *s, size_t len)
{
    char           esc[8];
    size_t         i, start;
    unsigned char  c;

    fc_json_append(json, "\"", 1);
    start = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }

        fc_json_append(json, s + start, i - start);
        start = i + 1;

        switch (c) {

        case '"':
            fc_json_append(json, "\\\"", 2);
            break;

        case '\\':
            fc_json_append(json, "\\\\", 2);
            break;

        case '\n':
            fc_json_append(json, "\\n", 2);
            break;

        case '\r':
            fc_json_append(json, "\\r", 2);
            break;

        case '\t':
            fc_json_append(json, "\\t", 2);
            break;

        default:
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            fc_json_append(json, esc, 6);
        }
    }

    fc_json_append(json, s + start, len - start);
    fc_json_append(json, "\"", 1);
}

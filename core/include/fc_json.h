/*
 * Writing JSON text into a buffer, with money as exact decimals.
 *
 * The cash register and 1C take sums as JSON numbers of roubles with
 * two decimals ("sum": 5000.00).  A JSON library would store such a
 * number as a double and print what the double holds; this writer
 * prints the integer kopecks as decimal text instead, so what is sent
 * is exactly what was counted.
 *
 * The writer appends to a buffer the caller owns and never allocates.
 * Commas are its business: a value is written with its key (inside an
 * object) or with a NULL key (inside an array, or at the top).  Any
 * error (a full buffer, an unbalanced close, too deep a nesting) is
 * remembered, later calls do nothing, and fc_json_finish() reports it,
 * so a builder need check only once at the end.
 */

#ifndef _FC_JSON_H_INCLUDED_
#define _FC_JSON_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* objects and arrays nested deeper than this are an error */
#define FC_JSON_DEPTH_MAX  16


typedef struct {
    char      *buf;
    size_t     size;
    size_t     len;
    unsigned   depth;
    unsigned   started;         /* bit n: level n has a member already */
    int        failed;
} fc_json_t;


void fc_json_init(fc_json_t *json, char *buf, size_t size);

void fc_json_object(fc_json_t *json, const char *key);
void fc_json_object_end(fc_json_t *json);
void fc_json_array(fc_json_t *json, const char *key);
void fc_json_array_end(fc_json_t *json);

/* a string of len bytes, escaped; the bytes are taken to be UTF-8 */
void fc_json_str(fc_json_t *json, const char *key, const char *s,
    size_t len);

/* a NUL-terminated string */
void fc_json_cstr(fc_json_t *json, const char *key, const char *s);

void fc_json_int(fc_json_t *json, const char *key, int64_t n);

/* kopecks as a number of roubles with two decimals: 500000 -> 5000.00 */
void fc_json_money(fc_json_t *json, const char *key, int64_t kopecks);

void fc_json_null(fc_json_t *json, const char *key);

/*
 * The length of the text, NUL-terminated in the buffer, or -1 if any
 * call failed or an object or array is still open.
 */
int fc_json_finish(fc_json_t *json);


#endif /* _FC_JSON_H_INCLUDED_ */

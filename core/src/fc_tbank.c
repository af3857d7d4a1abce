/*
 * T-Bank request and notification Token.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fc_tbank.h"


#define FC_TBANK_TOKEN_FIELD     "Token"
#define FC_TBANK_PASSWORD_FIELD  "Password"


typedef struct {
    const char    *key;
    const json_t  *value;               /* NULL: the terminal password */
} fc_tbank_pair_t;


static int fc_tbank_pair_cmp(const void *a, const void *b);
static int fc_tbank_digest_value(EVP_MD_CTX *ctx, const json_t *value,
    const char *password);


int
fc_tbank_token(const json_t *obj, const char *password,
    char out[FC_TBANK_TOKEN_LEN])
{
    int               rc;
    size_t            n, i;
    json_t           *value;
    const char       *key;
    EVP_MD_CTX       *ctx;
    unsigned int      len;
    fc_tbank_pair_t  *pairs;
    unsigned char     md[EVP_MAX_MD_SIZE];

    static const char  hex[] = "0123456789abcdef";

    if (!json_is_object(obj)) {
        return -1;
    }

    pairs = malloc((json_object_size(obj) + 1) * sizeof(fc_tbank_pair_t));

    if (pairs == NULL) {
        return -1;
    }

    n = 0;

    json_object_foreach((json_t *) obj, key, value) {

        switch (json_typeof(value)) {

        case JSON_STRING:
        case JSON_INTEGER:
        case JSON_TRUE:
        case JSON_FALSE:
            break;

        case JSON_REAL:
            free(pairs);
            return -1;

        default:
            continue;
        }

        if (strcmp(key, FC_TBANK_TOKEN_FIELD) == 0) {
            continue;
        }

        if (strcmp(key, FC_TBANK_PASSWORD_FIELD) == 0) {
            free(pairs);
            return -1;
        }

        pairs[n].key = key;
        pairs[n].value = value;
        n++;
    }

    pairs[n].key = FC_TBANK_PASSWORD_FIELD;
    pairs[n].value = NULL;
    n++;

    /* strcmp() compares as unsigned char: byte order, as required */
    qsort(pairs, n, sizeof(fc_tbank_pair_t), fc_tbank_pair_cmp);

    ctx = EVP_MD_CTX_new();

    if (ctx == NULL) {
        free(pairs);
        return -1;
    }

    rc = (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) ? 0 : -1;

    for (i = 0; rc == 0 && i < n; i++) {
        rc = fc_tbank_digest_value(ctx, pairs[i].value, password);
    }

    if (rc == 0 && EVP_DigestFinal_ex(ctx, md, &len) != 1) {
        rc = -1;
    }

    EVP_MD_CTX_free(ctx);
    free(pairs);

    if (rc != 0) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }

    out[2 * len] = '\0';

    return 0;
}


int
fc_tbank_token_verify(const json_t *obj, const char *password)
{
    int          rc;
    char         expect[FC_TBANK_TOKEN_LEN], got[FC_TBANK_TOKEN_LEN];
    size_t       i;
    const char  *token;

    if (fc_tbank_token(obj, password, expect) != 0) {
        return -1;
    }

    token = json_string_value(json_object_get(obj, FC_TBANK_TOKEN_FIELD));

    if (token == NULL || strlen(token) != FC_TBANK_TOKEN_LEN - 1) {
        return 0;
    }

    for (i = 0; i < FC_TBANK_TOKEN_LEN - 1; i++) {
        got[i] = (token[i] >= 'A' && token[i] <= 'F')
                 ? (char) (token[i] - 'A' + 'a') : token[i];
    }

    rc = (CRYPTO_memcmp(expect, got, FC_TBANK_TOKEN_LEN - 1) == 0);

    OPENSSL_cleanse(expect, sizeof(expect));

    return rc;
}


static int
fc_tbank_pair_cmp(const void *a, const void *b)
{
    const fc_tbank_pair_t  *pa = a, *pb = b;

    return strcmp(pa->key, pb->key);
}


static int
fc_tbank_digest_value(EVP_MD_CTX *ctx, const json_t *value,
    const char *password)
{
    int          n;
    char         num[32];
    size_t       len;
    const char  *s;

    if (value == NULL) {
        s = password;
        len = strlen(password);

    } else if (json_is_string(value)) {
        s = json_string_value(value);
        len = json_string_length(value);

    } else if (json_is_integer(value)) {
        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(value));
        s = num;
        len = (size_t) n;

    } else {
        s = json_is_true(value) ? "true" : "false";
        len = strlen(s);
    }

    return (EVP_DigestUpdate(ctx, s, len) == 1) ? 0 : -1;
}

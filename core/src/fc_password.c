/*
 * PBKDF2-HMAC-SHA256 password hashes in the encoded form
 * "pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>".
 */

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fc_base64.h"
#include "fc_password.h"


#define FC_PASSWORD_PREFIX      "pbkdf2-sha256$"

/* salts accepted when verifying, bytes; hashes written use 16 */
#define FC_PASSWORD_SALT_MIN    8
#define FC_PASSWORD_SALT_MAX    64


static int fc_password_derive(const char *pw, const unsigned char *salt,
    size_t salt_len, unsigned iterations, unsigned char *hash);


int
fc_password_hash(const char *pw, unsigned iterations, char *out,
    size_t size)
{
    int            n, rc;
    char           salt64[FC_BASE64_LEN(FC_PASSWORD_SALT_LEN) + 1];
    char           hash64[FC_BASE64_LEN(FC_PASSWORD_HASH_LEN) + 1];
    unsigned char  salt[FC_PASSWORD_SALT_LEN];
    unsigned char  hash[FC_PASSWORD_HASH_LEN];

    if (iterations == 0 || iterations > FC_PASSWORD_ITERATIONS_MAX) {
        return -1;
    }

    if (RAND_bytes(salt, sizeof(salt)) != 1) {
        return -1;
    }

    if (fc_password_derive(pw, salt, sizeof(salt), iterations, hash) != 0) {
        return -1;
    }

    fc_base64_encode(salt, sizeof(salt), salt64, sizeof(salt64));
    fc_base64_encode(hash, sizeof(hash), hash64, sizeof(hash64));

    n = snprintf(out, size, FC_PASSWORD_PREFIX "%u$%s$%s", iterations,
                 salt64, hash64);

    rc = (n < 0 || (size_t) n >= size) ? -1 : 0;

    OPENSSL_cleanse(hash, sizeof(hash));
    OPENSSL_cleanse(hash64, sizeof(hash64));

    return rc;
}


int
fc_password_verify(const char *pw, const char *encoded)
{
    int            salt_len, hash_len, rc;
    size_t         len;
    unsigned long  iterations;
    const char    *p, *salt64, *hash64;
    unsigned char  salt[FC_PASSWORD_SALT_MAX];
    unsigned char  hash[FC_PASSWORD_HASH_LEN + 3];
    unsigned char  derived[FC_PASSWORD_HASH_LEN];

    len = sizeof(FC_PASSWORD_PREFIX) - 1;

    if (strncmp(encoded, FC_PASSWORD_PREFIX, len) != 0) {
        return -1;
    }

    /* the iteration count: decimal digits, no sign, no leading zero */
    p = encoded + len;

    if (*p < '1' || *p > '9') {
        return -1;
    }

    iterations = 0;

    while (*p >= '0' && *p <= '9') {
        iterations = iterations * 10 + (unsigned long) (*p++ - '0');

        if (iterations > FC_PASSWORD_ITERATIONS_MAX) {
            return -1;
        }
    }

    if (*p++ != '$') {
        return -1;
    }

    salt64 = p;
    p = strchr(salt64, '$');

    if (p == NULL) {
        return -1;
    }

    hash64 = p + 1;

    salt_len = fc_base64_decode(salt64, (size_t) (p - salt64), salt,
                                sizeof(salt));
    hash_len = fc_base64_decode(hash64, strlen(hash64), hash, sizeof(hash));

    if (salt_len < FC_PASSWORD_SALT_MIN || hash_len != FC_PASSWORD_HASH_LEN)
    {
        return -1;
    }

    if (fc_password_derive(pw, salt, (size_t) salt_len,
                           (unsigned) iterations, derived)
        != 0)
    {
        return -1;
    }

    rc = (CRYPTO_memcmp(derived, hash, FC_PASSWORD_HASH_LEN) == 0);

    OPENSSL_cleanse(derived, sizeof(derived));

    return rc;
}


static int
fc_password_derive(const char *pw, const unsigned char *salt,
    size_t salt_len, unsigned iterations, unsigned char *hash)
{
    size_t  len;

    len = strlen(pw);

    if (len > INT_MAX) {
        return -1;
    }

    if (PKCS5_PBKDF2_HMAC(pw, (int) len, salt, (int) salt_len,
                          (int) iterations, EVP_sha256(),
                          FC_PASSWORD_HASH_LEN, hash)
        != 1)
    {
        return -1;
    }

    return 0;
}

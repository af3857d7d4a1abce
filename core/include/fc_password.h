/*
 * Password hashing: PBKDF2-HMAC-SHA256 with a random salt.
 *
 * A stored hash reads "pbkdf2-sha256$<iterations>$<salt>$<hash>", salt
 * and hash in padded base64, so the cost can be raised later without
 * invalidating old hashes: each one carries its own iteration count.
 * The functions keep no state and use no static buffers, so they may run
 * in several threads at once (the nginx module calls them from a thread
 * pool, because one hash takes tens of milliseconds on purpose).
 */

#ifndef _FC_PASSWORD_H_INCLUDED_
#define _FC_PASSWORD_H_INCLUDED_


#include <stddef.h>


#define FC_PASSWORD_ITERATIONS      100000

/*
 * Upper bound accepted when verifying, so that a forged stored hash
 * cannot make a login spin for minutes.
 */
#define FC_PASSWORD_ITERATIONS_MAX  10000000

#define FC_PASSWORD_SALT_LEN        16      /* bytes */
#define FC_PASSWORD_HASH_LEN        32      /* bytes, SHA-256 */

/* enough for any encoded hash this module writes, with the NUL */
#define FC_PASSWORD_ENCODED_LEN     128


/*
 * Hashes the NUL-terminated password pw with a fresh random salt and
 * writes the encoded form to out.  iterations must be 1 to
 * FC_PASSWORD_ITERATIONS_MAX; pass FC_PASSWORD_ITERATIONS unless a test
 * needs speed.  Returns 0, or -1 on bad arguments, a short buffer, or a
 * failure of the random generator.
 */
int fc_password_hash(const char *pw, unsigned iterations, char *out,
    size_t size);

/*
 * Checks pw against an encoded hash in constant time.  Returns 1 if it
 * matches, 0 if not, -1 if encoded is not a well-formed hash of this
 * scheme (which callers should log: it means a corrupt record).
 */
int fc_password_verify(const char *pw, const char *encoded);


#endif /* _FC_PASSWORD_H_INCLUDED_ */

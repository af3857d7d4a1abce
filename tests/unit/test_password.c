/*
 * fc_password: PBKDF2-HMAC-SHA256 hashes, their encoding, verification
 * and use from several threads.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fc_password.h"


/* computed independently (Python's hashlib.pbkdf2_hmac) */
#define KNOWN_PASSWORD  "пароль-1"
#define KNOWN_ENCODED                                                     \
    "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"                        \
    "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY="

#define THREADS  4


static void
test_known_answer_interoperates(void **state)
{
    (void) state;

    assert_int_equal(fc_password_verify(KNOWN_PASSWORD, KNOWN_ENCODED), 1);
    assert_int_equal(fc_password_verify("пароль-2", KNOWN_ENCODED), 0);
    assert_int_equal(fc_password_verify("", KNOWN_ENCODED), 0);
}


static void
test_hash_then_verify_with_default_cost(void **state)
{
    char  enc[FC_PASSWORD_ENCODED_LEN];

    (void) state;

    assert_int_equal(fc_password_hash("correct horse", FC_PASSWORD_ITERATIONS,
                                      enc, sizeof(enc)), 0);
    assert_memory_equal(enc, "pbkdf2-sha256$100000$", 21);
    assert_int_equal(fc_password_verify("correct horse", enc), 1);
    assert_int_equal(fc_password_verify("correct horsE", enc), 0);
}


static void
test_salt_is_random(void **state)
{
    char  a[FC_PASSWORD_ENCODED_LEN], b[FC_PASSWORD_ENCODED_LEN];

    (void) state;

    assert_int_equal(fc_password_hash("same", 1000, a, sizeof(a)), 0);
    assert_int_equal(fc_password_hash("same", 1000, b, sizeof(b)), 0);
    assert_string_not_equal(a, b);

    /* "pbkdf2-sha256$1000$" + 24 + "$" + 44 */
    assert_int_equal(strlen(a), 19 + 24 + 1 + 44);
}


static void
test_bad_arguments_are_refused(void **state)
{
    char  enc[FC_PASSWORD_ENCODED_LEN];

    (void) state;

    assert_int_equal(fc_password_hash("pw", 0, enc, sizeof(enc)), -1);
    assert_int_equal(fc_password_hash("pw", FC_PASSWORD_ITERATIONS_MAX + 1,
                                      enc, sizeof(enc)), -1);
    assert_int_equal(fc_password_hash("pw", 1000, enc, 60), -1);
}


static void
test_malformed_hashes_are_reported(void **state)
{
    size_t       i;

    static const char  *bad[] = {
        "",
        "pbkdf2-sha1$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$0$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$01000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$99999999999$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$1000ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoA==",
        "pbkdf2-sha256$1000$YWJj$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            "HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=$",
        "pbkdf2-sha256$1000$ZnVlbGNhcmQtc2FsdC0xNg==$"
            " HZzDdUTR0+6c1uwzTe8fkqFxlcLJ9qUNrXTiYCZZoPY=",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (fc_password_verify(KNOWN_PASSWORD, bad[i]) != -1) {
            fail_msg("accepted malformed hash \"%s\"", bad[i]);
        }
    }
}


static void *
verify_thread(void *arg)
{
    int   i;
    long  ok = 0;
    char  enc[FC_PASSWORD_ENCODED_LEN], pw[32];

    snprintf(pw, sizeof(pw), "thread-%ld", (long) (intptr_t) arg);

    for (i = 0; i < 5; i++) {
        if (fc_password_hash(pw, 2000, enc, sizeof(enc)) == 0
            && fc_password_verify(pw, enc) == 1
            && fc_password_verify(KNOWN_PASSWORD, KNOWN_ENCODED) == 1)
        {
            ok++;
        }
    }

    return (void *) (intptr_t) ok;
}


static void
test_concurrent_use_from_threads(void **state)
{
    int        i;
    void      *ok;
    pthread_t  t[THREADS];

    (void) state;

    for (i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, verify_thread,
                                        (void *) (intptr_t) i), 0);
    }

    for (i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], &ok), 0);
        assert_int_equal((intptr_t) ok, 5);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_known_answer_interoperates),
        cmocka_unit_test(test_hash_then_verify_with_default_cost),
        cmocka_unit_test(test_salt_is_random),
        cmocka_unit_test(test_bad_arguments_are_refused),
        cmocka_unit_test(test_malformed_hashes_are_reported),
        cmocka_unit_test(test_concurrent_use_from_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * fc_base64: encoding, and strict decoding of canonical input only.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_base64.h"


static void
test_rfc4648_vectors(void **state)
{
    int            i, n;
    char           enc[16];
    unsigned char  dec[16];

    static const char  *plain[] = {
        "", "f", "fo", "foo", "foob", "fooba", "foobar"
    };
    static const char  *coded[] = {
        "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"
    };

    (void) state;

    for (i = 0; i < 7; i++) {
        n = fc_base64_encode((const unsigned char *) plain[i],
                             strlen(plain[i]), enc, sizeof(enc));
        assert_int_equal(n, (int) strlen(coded[i]));
        assert_string_equal(enc, coded[i]);

        n = fc_base64_decode(coded[i], strlen(coded[i]), dec, sizeof(dec));
        assert_int_equal(n, (int) strlen(plain[i]));
        assert_memory_equal(dec, plain[i], (size_t) n);
    }
}


static void
test_non_canonical_input_is_refused(void **state)
{
    int            i;
    unsigned char  dec[16];

    static const char  *bad[] = {
        "Zg=", "Zg", "Z===", "Zh==", "Zm9=", "Zg==Zg==", "Zm9v\n",
        "Zm 9", "Zm9-", "=Zg=", "Z=g=",
    };

    (void) state;

    for (i = 0; i < (int) (sizeof(bad) / sizeof(bad[0])); i++) {
        if (fc_base64_decode(bad[i], strlen(bad[i]), dec, sizeof(dec)) != -1)
        {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}


static void
test_short_buffers_are_refused(void **state)
{
    char           enc[8];
    unsigned char  dec[2];

    (void) state;

    assert_int_equal(fc_base64_encode((const unsigned char *) "foobar", 6,
                                      enc, 8), -1);
    assert_int_equal(fc_base64_decode("Zm9v", 4, dec, sizeof(dec)), -1);
    assert_int_equal(fc_base64_decode("Zm8=", 4, dec, sizeof(dec)), 2);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_non_canonical_input_is_refused),
        cmocka_unit_test(test_short_buffers_are_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

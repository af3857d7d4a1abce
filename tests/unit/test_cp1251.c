/*
 * fc_cp1251: UTF-8 to cp1251 for the export, cp1251 to UTF-8 for the
 * files accounting systems send back.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fc_cp1251.h"


/* encodes s and checks the bytes and the count of replaced characters */
static void
encode_ok(const char *s, const char *expect, size_t expect_len,
    size_t expect_replaced)
{
    unsigned char  out[256];
    size_t         n, replaced;

    n = 12345;
    replaced = 12345;

    if (fc_cp1251_encode((const unsigned char *) s, strlen(s), out,
                         sizeof(out), &n, &replaced)
        != 0)
    {
        fail_msg("fc_cp1251_encode(\"%s\") failed at byte %zu", s, n);
    }

    assert_int_equal(n, expect_len);
    assert_memory_equal(out, expect, expect_len);
    assert_int_equal(replaced, expect_replaced);
}


/* checks that bytes that are not UTF-8 are refused at offset at */
static void
encode_bad(const char *s, size_t len, size_t at)
{
    unsigned char  out[64];
    size_t         n;

    n = 12345;

    if (fc_cp1251_encode((const unsigned char *) s, len, out, sizeof(out),
                         &n, NULL)
        != -1)
    {
        fail_msg("fc_cp1251_encode accepted bad UTF-8 (%zu bytes)", len);
    }

    assert_int_equal(n, at);
}


static void
test_ascii_passes_through_both_ways(void **state)
{
    unsigned char  out[64];
    size_t         n;
    const char    *s = "id;at;amount\r\n42;\"a \"\"b\"\"\";3774.00\r\n";

    (void) state;

    encode_ok(s, s, strlen(s), 0);

    assert_int_equal(fc_cp1251_decode((const unsigned char *) s, strlen(s),
                                      out, sizeof(out), &n), 0);
    assert_int_equal(n, strlen(s));
    assert_memory_equal(out, s, n);

    encode_ok("", "", 0, 0);
}


static void
test_russian_letters_encode_to_their_bytes(void **state)
{
    (void) state;

    /* "АЗС Уральская" */
    encode_ok("\xd0\x90\xd0\x97\xd0\xa1 \xd0\xa3\xd1\x80\xd0\xb0\xd0\xbb"
              "\xd1\x8c\xd1\x81\xd0\xba\xd0\xb0\xd1\x8f",
              "\xc0\xc7\xd1 \xd3\xf0\xe0\xeb\xfc\xf1\xea\xe0\xff", 13, 0);

    /* the ends of the alphabet: 'А' 'я', and 'Ё' 'ё' outside it */
    encode_ok("\xd0\x90\xd1\x8f\xd0\x81\xd1\x91", "\xc0\xff\xa8\xb8", 4, 0);
}


static void
test_upper_half_table_encodes_no_sign_quotes_and_dashes(void **state)
{
    (void) state;

    /* "№ 7 «Лесная» — 2 км" */
    encode_ok("\xe2\x84\x96 7 \xc2\xab\xd0\x9b\xd0\xb5\xd1\x81\xd0\xbd"
              "\xd0\xb0\xd1\x8f\xc2\xbb \xe2\x80\x94 2 \xd0\xba\xd0\xbc",
              "\xb9 7 \xab\xcb\xe5\xf1\xed\xe0\xff\xbb \x97 2 \xea\xec",
              19, 0);

    /* the euro sign, no-break space, Ukrainian and Serbian letters */
    encode_ok("\xe2\x82\xac\xc2\xa0\xd2\x90\xd1\x97\xd0\x89",
              "\x88\xa0\xa5\xbf\x8a", 5, 0);
}


static void
test_unmappable_characters_become_question_marks(void **state)
{
    (void) state;

    /* "Caf\u00e9 \u4e2d \U0001F600 \u0101" */
    encode_ok("Caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80 \xc4\x81",
              "Caf? ? ? ?", 10, 4);

    /* a character that has a byte right next to one that has none */
    encode_ok("\xd0\xaf\xe2\x84\xa2\xe2\x84\xa3",
              "\xdf\x99?", 3, 1);
}


static void
test_invalid_utf8_is_refused_where_it_starts(void **state)
{
    (void) state;

    /* a lone continuation byte */
    encode_bad("ab\x80", 3, 2);
    /* overlong forms of '/' and of U+0000 */
    encode_bad("\xc0\xaf", 2, 0);
    encode_bad("x\xe0\x80\xaf", 4, 1);
    encode_bad("\xc1\xbf", 2, 0);
    /* a UTF-16 surrogate written as UTF-8 */
    encode_bad("\xed\xa0\x80", 3, 0);
    /* above U+10FFFF, and bytes that never occur */
    encode_bad("\xf4\x90\x80\x80", 4, 0);
    encode_bad("\xf5\x80\x80\x80", 4, 0);
    encode_bad("ok\xff", 3, 2);
    /* a sequence cut short, inside the text and at its end */
    encode_bad("\xd0\x90\xd0 ", 4, 2);
    encode_bad("\xd0\x90\xe2\x84", 4, 2);
}


static void
test_encoding_in_place_and_a_small_buffer(void **state)
{
    unsigned char  buf[32], small[3];
    size_t         n, replaced;

    (void) state;

    /* "Цена: 62.90 ₽" in place; the rouble sign has no byte */
    memcpy(buf, "\xd0\xa6\xd0\xb5\xd0\xbd\xd0\xb0: 62.90 \xe2\x82\xbd", 19);

    assert_int_equal(fc_cp1251_encode(buf, 19, buf, sizeof(buf), &n,
                                      &replaced), 0);
    assert_int_equal(n, 13);
    assert_memory_equal(buf, "\xd6\xe5\xed\xe0: 62.90 ?", 13);
    assert_int_equal(replaced, 1);

    /* four characters do not fit in three bytes: refused at the fourth */
    assert_int_equal(fc_cp1251_encode((const unsigned char *)
                                      "\xd0\x90\xd0\x91\xd0\x92\xd0\x93",
                                      8, small, sizeof(small), &n, NULL),
                     -1);
    assert_int_equal(n, 6);
}


static void
test_every_assigned_byte_round_trips(void **state)
{
    unsigned char  bytes[256], utf8[FC_CP1251_UTF8_LEN(256)], back[256];
    size_t         i, len, n, m, replaced;

    (void) state;

    len = 0;

    for (i = 1; i < 256; i++) {
        if (i != 0x98) {
            bytes[len++] = (unsigned char) i;
        }
    }

    assert_int_equal(fc_cp1251_decode(bytes, len, utf8, sizeof(utf8), &n),
                     0);
    assert_int_equal(fc_cp1251_encode(utf8, n, back, sizeof(back), &m,
                                      &replaced), 0);
    assert_int_equal(m, len);
    assert_int_equal(replaced, 0);
    assert_memory_equal(back, bytes, len);
}


static void
test_decoding_gives_utf8(void **state)
{
    unsigned char  out[64];
    size_t         n;

    (void) state;

    /* "Ёж №5 — €" */
    assert_int_equal(fc_cp1251_decode((const unsigned char *)
                                      "\xa8\xe6 \xb9\x35 \x97 \x88", 9,
                                      out, sizeof(out), &n), 0);
    assert_int_equal(n, 17);
    assert_memory_equal(out, "\xd0\x81\xd0\xb6 \xe2\x84\x96" "5 "
                             "\xe2\x80\x94 \xe2\x82\xac", 17);
}


static void
test_decoding_refuses_the_unassigned_byte_and_a_small_buffer(void **state)
{
    unsigned char  out[8];
    size_t         n;

    (void) state;

    n = 12345;
    assert_int_equal(fc_cp1251_decode((const unsigned char *) "ab\x98z", 4,
                                      out, sizeof(out), &n), -1);
    assert_int_equal(n, 2);

    /* 'Я' needs two bytes and only one is left */
    assert_int_equal(fc_cp1251_decode((const unsigned char *) "abc\xdf", 4,
                                      out, 4, &n), -1);
    assert_int_equal(n, 3);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_passes_through_both_ways),
        cmocka_unit_test(test_russian_letters_encode_to_their_bytes),
        cmocka_unit_test(
            test_upper_half_table_encodes_no_sign_quotes_and_dashes),
        cmocka_unit_test(test_unmappable_characters_become_question_marks),
        cmocka_unit_test(test_invalid_utf8_is_refused_where_it_starts),
        cmocka_unit_test(test_encoding_in_place_and_a_small_buffer),
        cmocka_unit_test(test_every_assigned_byte_round_trips),
        cmocka_unit_test(test_decoding_gives_utf8),
        cmocka_unit_test(
            test_decoding_refuses_the_unassigned_byte_and_a_small_buffer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

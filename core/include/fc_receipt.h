/*
 * The cash register's receipt of a top-up (54-FZ, ATOL Online v4 "sell").
 *
 * A top-up of a fuel-card contract is an advance: the client pays
 * before any fuel is chosen.  Its receipt therefore has one item whose
 * price and sum are the amount, quantity 1, payment method "advance",
 * payment object "payment" (tag 1212 value 10), VAT at the calculated
 * rate in force on the payment date (vat122 = 22/122 from 2026, vat120
 * = 20/120 before) with the VAT sum taken out of the amount, one
 * cashless payment (type 1) of the whole amount, and a total equal to
 * it.  The client gets it by e-mail; the company fields are the
 * seller's (INN, tax system, the site address of online payments).
 *
 * Sums are written from integer kopecks as decimal text ("5000.00"):
 * see fc_json.h.
 */

#ifndef _FC_RECEIPT_H_INCLUDED_
#define _FC_RECEIPT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "fc_vat.h"


/* "dd.mm.yyyy HH:MM:SS" */
#define FC_RECEIPT_TIMESTAMP_LEN  19

/* a sell request is well under this */
#define FC_RECEIPT_JSON_MAX       8192


typedef struct {
    const char           *external_id;  /* our key: a retry, same receipt */
    const char           *timestamp;    /* dd.mm.yyyy HH:MM:SS */
    const char           *callback_url; /* "" when the report is polled */
    const char           *client_email;
    const char           *item_name;
    int64_t               amount;       /* kopecks, > 0 */
    const fc_vat_rate_t  *vat;          /* in force on the payment date */
    const char           *company_email;
    const char           *company_sno;
    const char           *company_inn;
    const char           *payment_address;
} fc_receipt_t;


/*
 * Writes the body of the sell request into buf.  Returns its length, or
 * -1 with a message naming the field and quoting its value in err: an
 * empty external id, e-mail or item name, a timestamp not of the form
 * above, an amount that is not positive, no VAT rate, or a buf too
 * small.
 */
int fc_receipt_sell_json(const fc_receipt_t *r, char *buf, size_t size,
    char *err, size_t errlen);


#endif /* _FC_RECEIPT_H_INCLUDED_ */

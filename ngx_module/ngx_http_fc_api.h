/*
 * The API routes of the fuel card platform, spliced into the route
 * table of ngx_http_fc_module.c.  Most routes are answered by one call
 * to the SQL function fc_api() named after the route (see
 * docs/processing.md); the few that need nginx itself have handlers of
 * their own.
 */

#ifndef _NGX_HTTP_FC_API_H_INCLUDED_
#define _NGX_HTTP_FC_API_H_INCLUDED_


#include "ngx_http_fc_module.h"


#define NGX_HTTP_FC_PUT            NGX_HTTP_PUT
#define NGX_HTTP_FC_PATCH          NGX_HTTP_PATCH


/* the state of a route answered by fc_api() */
typedef struct {
    ngx_http_fc_ctx_t         *ctx;
    json_t                    *req;        /* what fc_api() is given */
    json_t                    *res;        /* its latest answer */
    u_char                    *password;
    u_char                    *hash;
    ngx_int_t                  password_ok;
    ngx_uint_t                 verified;
    ngx_uint_t                 bank_called;
    ngx_str_t                  bank_body;  /* the request to the bank */
    ngx_str_t                  bank_answer;
    ngx_uint_t                 bank_status;
    size_t                     redis_next;
    ngx_uint_t                 redis_failed;
    ngx_event_t                delay;
} ngx_http_fc_sql_t;


void ngx_http_fc_sql_route(ngx_http_fc_ctx_t *ctx);
ngx_http_fc_sql_t *ngx_http_fc_sql_create(ngx_http_fc_ctx_t *ctx);
void ngx_http_fc_sql_start(ngx_http_fc_sql_t *s);
ngx_int_t ngx_http_fc_sql_call(ngx_http_fc_sql_t *s, const char *route);
const char *ngx_http_fc_pstrdup(ngx_pool_t *pool, const char *s);

void ngx_http_fc_pos_authorize(ngx_http_fc_ctx_t *ctx);

void ngx_http_fc_export_transactions(ngx_http_fc_ctx_t *ctx);

void ngx_http_fc_bank_call(ngx_http_fc_sql_t *s);
void ngx_http_fc_bank_notification(ngx_http_fc_ctx_t *ctx);
ngx_int_t ngx_http_fc_bank_add_variables(ngx_conf_t *cf);


#define ngx_http_fc_sql(group, method, pattern, name, flags)                 \
    ngx_http_fc_route(group, method, pattern, ngx_http_fc_sql_route, name,  \
                      flags)

#define NGX_HTTP_FC_API_ROUTES                                               \
                                                                            \
    ngx_http_fc_route("pos", NGX_HTTP_POST, "/pos/v1/authorize",            \
                      ngx_http_fc_pos_authorize, "pos_authorize",           \
                      NGX_HTTP_FC_JSON_BODY),                               \
    ngx_http_fc_sql("pos", NGX_HTTP_POST, "/pos/v1/complete",               \
                    "pos_complete", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("pos", NGX_HTTP_POST, "/pos/v1/reverse",                \
                    "pos_reverse", NGX_HTTP_FC_JSON_BODY),                  \
    ngx_http_fc_sql("pos", NGX_HTTP_POST, "/pos/v1/refund",                 \
                    "pos_refund", NGX_HTTP_FC_JSON_BODY),                   \
                                                                            \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/session",                \
                    "session_create", NGX_HTTP_FC_JSON_BODY),               \
    ngx_http_fc_sql("api", NGX_HTTP_DELETE, "/api/v1/session",              \
                    "session_delete", 0),                                   \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/me", "me", 0),            \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/contracts",               \
                    "contracts_list", 0),                                   \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/contracts/{}",            \
                    "contract_get", 0),                                     \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/contracts/{}/statement",  \
                    "contract_statement", 0),                               \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/cards",                   \
                    "cards_list", 0),                                       \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/cards/block",            \
                    "cards_block_many", NGX_HTTP_FC_JSON_BODY),             \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/cards/unblock",          \
                    "cards_unblock_many", NGX_HTTP_FC_JSON_BODY),           \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/cards/{}",                \
                    "card_get", 0),                                         \
    ngx_http_fc_sql("api", NGX_HTTP_FC_PATCH, "/api/v1/cards/{}",           \
                    "card_update", NGX_HTTP_FC_JSON_BODY),                  \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/cards/{}/block",         \
                    "card_block", NGX_HTTP_FC_JSON_OPTIONAL),               \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/cards/{}/unblock",       \
                    "card_unblock", NGX_HTTP_FC_JSON_OPTIONAL),             \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/card-groups",             \
                    "groups_list", 0),                                      \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/card-groups",            \
                    "group_create", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/limits",                  \
                    "limits_list", 0),                                      \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/limits",                 \
                    "limit_create", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("api", NGX_HTTP_FC_PUT, "/api/v1/limits/{}",            \
                    "limit_update", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("api", NGX_HTTP_DELETE, "/api/v1/limits/{}",            \
                    "limit_delete", 0),                                     \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/transactions",            \
                    "transactions_list", 0),                                \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/contracts/{}/topups",    \
                    "topup_create", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/payments",                \
                    "payments_list", 0),                                    \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/payments/{}",             \
                    "payment_get", 0),                                      \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/backoffice/outbox",       \
                    "backoffice_outbox", 0),                                \
    ngx_http_fc_sql("api", NGX_HTTP_POST,                                   \
                    "/api/v1/backoffice/outbox/{}/retry",                   \
                    "backoffice_outbox_retry", NGX_HTTP_FC_JSON_OPTIONAL),  \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/backoffice/registries",  \
                    "registry_import", NGX_HTTP_FC_RAW_BODY),               \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/backoffice/registries",   \
                    "registries_list", 0),                                  \
    ngx_http_fc_sql("api", NGX_HTTP_GET,                                    \
                    "/api/v1/backoffice/reconciliations",                   \
                    "reconciliation_get", 0),                               \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/backoffice/calendar",     \
                    "calendar_list", 0),                                    \
    ngx_http_fc_sql("api", NGX_HTTP_FC_PUT,                                 \
                    "/api/v1/backoffice/calendar/{}/{}",                    \
                    "calendar_set", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("api", NGX_HTTP_GET, "/api/v1/api-keys",                \
                    "api_keys_list", 0),                                    \
    ngx_http_fc_sql("api", NGX_HTTP_POST, "/api/v1/api-keys",               \
                    "api_key_create", NGX_HTTP_FC_JSON_BODY),               \
    ngx_http_fc_sql("api", NGX_HTTP_DELETE, "/api/v1/api-keys/{}",          \
                    "api_key_revoke", 0),                                   \
                                                                            \
    ngx_http_fc_route("export", NGX_HTTP_GET, "/export/v1/transactions",    \
                      ngx_http_fc_export_transactions,                      \
                      "export_transactions", 0),                            \
                                                                            \
    ngx_http_fc_route("bank", NGX_HTTP_POST, "/bank/v1/tbank/notification", \
                      ngx_http_fc_bank_notification, "bank_notification",   \
                      NGX_HTTP_FC_JSON_BODY),                               \
                                                                            \
    ngx_http_fc_sql("mobile", NGX_HTTP_POST, "/mobile/v1/token",            \
                    "mobile_token", NGX_HTTP_FC_JSON_BODY),                 \
    ngx_http_fc_sql("mobile", NGX_HTTP_DELETE, "/mobile/v1/token",          \
                    "mobile_token_revoke", 0),                              \
    ngx_http_fc_sql("mobile", NGX_HTTP_GET, "/mobile/v1/cards",             \
                    "mobile_cards", 0),                                     \
    ngx_http_fc_sql("mobile", NGX_HTTP_POST, "/mobile/v1/cards/{}/block",   \
                    "mobile_card_block", NGX_HTTP_FC_JSON_OPTIONAL),        \
    ngx_http_fc_sql("mobile", NGX_HTTP_POST, "/mobile/v1/cards/{}/unblock", \
                    "mobile_card_unblock", NGX_HTTP_FC_JSON_OPTIONAL),      \
    ngx_http_fc_sql("mobile", NGX_HTTP_GET, "/mobile/v1/stations",          \
                    "mobile_stations", 0),


#endif /* _NGX_HTTP_FC_API_H_INCLUDED_ */

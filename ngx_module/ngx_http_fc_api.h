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


void ngx_http_fc_sql_route(ngx_http_fc_ctx_t *ctx);
void ngx_http_fc_pos_authorize(ngx_http_fc_ctx_t *ctx);


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

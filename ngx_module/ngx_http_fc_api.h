/*
 * The API routes of the fuel card platform, one line each, spliced
 * into the route table of ngx_http_fc_module.c.
 */

#ifndef _NGX_HTTP_FC_API_H_INCLUDED_
#define _NGX_HTTP_FC_API_H_INCLUDED_


#define NGX_HTTP_FC_API_ROUTES


#endif /* _NGX_HTTP_FC_API_H_INCLUDED_ */

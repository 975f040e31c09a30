/* mgmt_api: the management API, `POST /socket` with a form field `method`
 * (docs/protocol.md, Management API): createDocument, deleteDocument, dumpDocument, checkDocument,
 * addToken, updateUser.
 *
 * Every call needs HTTP Basic credentials equal to SecretUser/SecretPassword
 * (compared in constant time); when both are empty the API is disabled and every call
 * gets 401. Credentials are checked before the body is read, so an unauthenticated
 * caller cannot make the server buffer anything and learns nothing (not even whether a
 * method name exists). Bodies are application/x-www-form-urlencoded or
 * multipart/form-data, parsed by CivetWeb and kept in memory (an uploaded `contents`
 * file never touches the disk), bounded by MaxApiBodyBytes (413 beyond). Fields missing
 * from the body are also looked up in the query string, as the reference server does.
 *
 * Status codes: 200 done; 400 `Missing <field>` (an empty field counts as missing),
 * unknown method, bad date or malformed form; 401 bad or missing credentials;
 * 404 document missing (dump/check); 409 already exists; 413 body too large;
 * 500/503 storage failure. CORS headers are added when the request has an Origin.
 */
#ifndef ZW_MGMT_API_H
#define ZW_MGMT_API_H

struct mg_connection;
struct app;

/* Handles one POST request completely (reads the body, writes the whole response).
 * Returns the HTTP status code it sent, for a CivetWeb request handler to return.
 * Safe to call from many CivetWeb worker threads at once. */
int mgmt_api_handle(struct mg_connection *conn, const struct app *app);

#endif

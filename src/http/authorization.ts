/**
 * One credential per request: an Authorization header sent more than once, or holding several
 * credentials, is refused 400 invalid_input on field `authorization` (RFC 6750 §3.1: a request
 * that "uses more than one method for including an access token" is an invalid_request, 400).
 * Sent twice, the header reached the HTTP app as one value joined with ", " (Fetch's Headers),
 * answered "missing bearer token", and the WebSocket upgrade as its first line only (Node's
 * req.headers), the second silently dropped.
 */
export const SEVERAL_AUTHORIZATIONS =
  'authorization: more than one Authorization header, or several credentials in one: send one Authorization: Bearer <access token> (RFC 6750 §3.1)';

/**
 * True when a request's Authorization field lines carry more than one credential. A bearer token
 * or API key never holds a comma, so a comma in one line means lines joined, or a list.
 */
export function severalAuthorizations(lines: readonly string[] | undefined): boolean {
  return lines !== undefined && (lines.length > 1 || lines.some((line) => line.includes(',')));
}

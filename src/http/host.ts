import type { IncomingMessage } from 'node:http';

/**
 * Host values already found to be a host[:port], so that the usual request (every request of a
 * client names the same host) is one Set lookup instead of a regular expression and a URL parse.
 * Bounded: emptied when full, so a client sending ever new values costs only the checks again.
 */
const acceptedHosts = new Set<string>();
const ACCEPTED_HOSTS_MAX = 64;

/**
 * What is wrong with a request's Host header (RFC 9112 §3.2: an HTTP/1.1 request names exactly one
 * host, as host[:port]; a server answers 400 otherwise), as `host: <problem>`, or null. HTTP/1.0
 * may send none. Used for every request (src/server.ts requestListener) and every WebSocket
 * upgrade (src/realtime/gateway.ts), which Node hands over with any Host, two or none.
 *
 * The header is found in `rawHeaders` (every header line as received, names in any case): Node's
 * `headersDistinct` would do, but builds an array per header of the request on first use, on
 * every request.
 */
export function hostProblem(req: IncomingMessage): string | null {
  const raw = req.rawHeaders;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (host !== undefined) return 'host: more than one Host header: send one (RFC 9112 §3.2)';
      host = raw[i + 1] ?? '';
    }
  }
  if (host === undefined) {
    const http11 = req.httpVersionMajor > 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1);
    return http11 ? 'host: an HTTP/1.1 request names its host in a Host header (RFC 9112 §3.2)' : null;
  }
  if (acceptedHosts.has(host)) return null;
  // a host and a port, nothing a URL would read as user info, path, query or fragment
  if (!/^[^\s/?#@\\]+$/.test(host) || !URL.canParse(`http://${host}/`)) return 'host: the Host header is not a host[:port] (RFC 9112 §3.2)';
  if (acceptedHosts.size >= ACCEPTED_HOSTS_MAX) acceptedHosts.clear();
  acceptedHosts.add(host);
  return null;
}

import type { IncomingMessage } from 'node:http';

/**
 * What is wrong with a request's Host header (RFC 9112 §3.2: an HTTP/1.1 request names exactly one
 * host, as host[:port]; a server answers 400 otherwise), as `host: <problem>`, or null. HTTP/1.0
 * may send none. Used for every request (src/server.ts requestListener) and every WebSocket
 * upgrade (src/realtime/gateway.ts), which Node hands over with any Host, two or none.
 */
export function hostProblem(req: IncomingMessage): string | null {
  const hosts = req.headersDistinct.host;
  if (hosts && hosts.length > 1) return 'host: more than one Host header: send one (RFC 9112 §3.2)';
  if (!hosts) {
    const http11 = req.httpVersionMajor > 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1);
    return http11 ? 'host: an HTTP/1.1 request names its host in a Host header (RFC 9112 §3.2)' : null;
  }
  const host = hosts[0]!;
  // a host and a port, nothing a URL would read as user info, path, query or fragment
  if (!/^[^\s/?#@\\]+$/.test(host) || !URL.canParse(`http://${host}/`)) return 'host: the Host header is not a host[:port] (RFC 9112 §3.2)';
  return null;
}

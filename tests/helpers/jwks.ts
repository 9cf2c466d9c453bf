import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type CryptoKey } from 'jose';

/** What the stand-in answers: the key set, or one of the ways a JWKS endpoint fails. */
export type JwksMode = 'ok' | 'status 500' | 'html page' | 'connection reset';

type KeyPair = { publicKey: CryptoKey; privateKey: CryptoKey };

/**
 * An HTTP server standing in for Supabase's /auth/v1/.well-known/jwks.json: the project's RS256
 * public key under kid `project-1` while `mode` is 'ok', else the failure `mode` names (a 500, a
 * proxy's HTML page, a reset connection). `stranger` is a key pair the set does not hold.
 */
export type JwksStandIn = { url: string; project: KeyPair; stranger: KeyPair; mode: JwksMode; close(): Promise<void> };

export async function startJwksStandIn(mode: JwksMode): Promise<JwksStandIn> {
  const [project, stranger] = await Promise.all([generateKeyPair('RS256', { extractable: true }), generateKeyPair('RS256', { extractable: true })]);
  const keys = [{ ...(await exportJWK(project.publicKey)), kid: 'project-1', alg: 'RS256', use: 'sig' }];
  const server = createServer((req, res) => {
    if (standIn.mode === 'connection reset') return void req.socket.destroy();
    if (standIn.mode === 'status 500') return void res.writeHead(500, { 'content-type': 'text/plain' }).end('upstream failure');
    if (standIn.mode === 'html page') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>502 Bad Gateway</body></html>');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const standIn: JwksStandIn = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/auth/v1/.well-known/jwks.json`,
    project, stranger, mode,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return standIn;
}

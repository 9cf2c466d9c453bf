import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, HTTP_USER_POLICY, REALTIME_POLICY } from '../../src/auth/jwt.ts';

// Asymmetric signing keys (SUPABASE_JWKS_URL) against the attacks on them, with a real JWKS served
// over HTTP and jose as the server uses it: a token of another key under the JWKS key's kid, the
// RS256 public key used as an HS256 secret (algorithm confusion), a key the token carries itself
// (an embedded jwk), alg none. The project's HS256 secret, when one is configured beside the JWKS,
// still verifies HS256 tokens; with no secret (JWKS only) none is accepted.

type Pair = { publicKey: CryptoKey; privateKey: CryptoKey };
let server: Server;
let jwksUrl: string;
let rsa: Pair;
let ec: Pair;
let stranger: Pair; // another project's key
const SECRET = 'the-project-jwt-secret-of-at-least-32-chars';
const sub = '11111111-1111-4111-8111-111111111111';

beforeAll(async () => {
  [rsa, ec, stranger] = await Promise.all([
    generateKeyPair('RS256', { extractable: true }), generateKeyPair('ES256', { extractable: true }), generateKeyPair('RS256', { extractable: true })]);
  const keys = [{ ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }, { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' }];
  server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/auth/v1/.well-known/jwks.json`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const claims = () => {
  const now = Math.floor(Date.now() / 1000);
  return { sub, role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 600 };
};
const sign = (alg: string, key: CryptoKey | Uint8Array, header: Record<string, unknown> = {}) =>
  new SignJWT(claims()).setProtectedHeader({ alg, typ: 'JWT', ...header }).sign(key);
const bytes = (text: string) => new TextEncoder().encode(text);
const verdict = (verify: ReturnType<typeof createTokenVerifier>, token: string) =>
  verify(token, HTTP_USER_POLICY).then((c) => `accepted ${c.sub}`, (err: { code?: string }) => `refused ${err.code}`);

describe.each([['with JWT_SECRET too', SECRET], ['JWKS only', '']])('SUPABASE_JWKS_URL (%s)', (_name, jwtSecret) => {
  const verifier = () => createTokenVerifier({ jwtSecret, jwksUrl, audience: 'authenticated' });

  it('accepts tokens of the JWKS keys (RS256, ES256), by kid or without one', async () => {
    const verify = verifier();
    expect(await verdict(verify, await sign('RS256', rsa.privateKey, { kid: 'rsa-1' }))).toBe(`accepted ${sub}`);
    expect(await verdict(verify, await sign('ES256', ec.privateKey, { kid: 'ec-1' }))).toBe(`accepted ${sub}`);
    expect(await verdict(verify, await sign('RS256', rsa.privateKey))).toBe(`accepted ${sub}`);
  });

  it('refuses another key under a JWKS kid, an unknown kid, a key the token carries, the public key as an HS256 secret, alg none', async () => {
    const verify = verifier();
    const jwk = await exportJWK(rsa.publicKey);
    const forged = {
      'another key, the JWKS key\'s kid': await sign('RS256', stranger.privateKey, { kid: 'rsa-1' }),
      'an unknown kid': await sign('RS256', stranger.privateKey, { kid: 'rsa-2' }),
      'an embedded jwk': await sign('RS256', stranger.privateKey, { jwk: await exportJWK(stranger.publicKey) }),
      'a jku to elsewhere': await sign('RS256', stranger.privateKey, { jku: 'http://127.0.0.1:9/jwks.json', kid: 'rsa-1' }),
      'HS256 keyed with the public key (PEM)': await sign('HS256', bytes(await exportSPKI(rsa.publicKey)), { kid: 'rsa-1' }),
      'HS256 keyed with the public key (JWK)': await sign('HS256', bytes(JSON.stringify(jwk)), { kid: 'rsa-1' }),
      'HS256 keyed with the modulus': await sign('HS256', bytes(jwk.n!), { kid: 'rsa-1' }),
      'alg none': `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}.`,
    };
    for (const [name, token] of Object.entries(forged)) expect(await verdict(verify, token), name).toBe('refused invalid_token');
  });

  it(jwtSecret ? 'still verifies HS256 tokens of the project secret' : 'accepts no HS256 token at all, not even one of the development secret', async () => {
    const verify = verifier();
    const hs = await sign('HS256', bytes(SECRET));
    expect(await verdict(verify, hs)).toBe(jwtSecret ? `accepted ${sub}` : 'refused invalid_token');
    // the anon key (HS256, no sub) on realtime follows the same rule
    const now = Math.floor(Date.now() / 1000);
    const anon = await new SignJWT({ role: 'anon', iss: 'supabase', iat: now, exp: now + 600 }).setProtectedHeader({ alg: 'HS256' }).sign(bytes(SECRET));
    expect(await verify(anon, REALTIME_POLICY).then(() => 'accepted', () => 'refused')).toBe(jwtSecret ? 'accepted' : 'refused');
  });
});

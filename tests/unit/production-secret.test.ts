import { describe, expect, it } from 'vitest';
import { createTokenVerifier, HTTP_USER_POLICY, signAccessToken } from '../../src/auth/jwt.ts';
import { DEV_JWT_SECRET, loadConfig } from '../../src/config.ts';

// Supabase's development JWT secret is public: a production server must never accept a token
// signed with it, whether JWT_SECRET is unset (JWKS only) or set to it by mistake.

const JWKS = 'https://example.supabase.co/auth/v1/.well-known/jwks.json';
const USER = '5b0e5cb6-5f0c-4d55-9ac1-b2a6d4b8d7a1';

describe('production JWT secret', () => {
  it('with JWKS only, no secret is configured and an HS256 token signed with the dev secret is refused', async () => {
    const config = loadConfig({ NODE_ENV: 'production', SUPABASE_JWKS_URL: JWKS });
    expect(config.auth.jwtSecret).toBe('');
    const verify = createTokenVerifier(config.auth);
    const forged = await signAccessToken(DEV_JWT_SECRET, { sub: USER });
    await expect(verify(forged, HTTP_USER_POLICY)).rejects.toMatchObject({ code: 'invalid_token', message: expect.stringContaining('no JWT_SECRET') });
  });

  it('the shipped env file (JWT_SECRET= empty: unset) is refused naming the variable, what to set and where it is explained', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: '' }))
      .toThrow(/^invalid environment: JWT_SECRET: must be set in production \(it is empty\): .*32 characters.*docs\/self-hosting\.md, "Environment reference"/);
  });

  it('refuses to start with the published development secret', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: DEV_JWT_SECRET }))
      .toThrow(/published development secret/);
  });

  it('outside production the development secret is the default (npm start works out of the box)', async () => {
    const config = loadConfig({});
    expect(config.auth.jwtSecret).toBe(DEV_JWT_SECRET);
    const claims = await createTokenVerifier(config.auth)(await signAccessToken(DEV_JWT_SECRET, { sub: USER }), HTTP_USER_POLICY);
    expect(claims.sub).toBe(USER);
  });
});

describe('JWT_SECONDARY_SECRET (the rotation\'s other secret)', () => {
  const SECRET = 'a-project-secret-of-at-least-32-characters';
  it('is refused without JWT_SECRET, naming both and where rotation is explained', () => {
    expect(() => loadConfig({ JWT_SECONDARY_SECRET: SECRET }))
      .toThrow(/^invalid environment: JWT_SECONDARY_SECRET: set without JWT_SECRET.*"Rotating the JWT secret"/);
  });

  it('refuses the published development secret in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: SECRET, JWT_SECONDARY_SECRET: DEV_JWT_SECRET }))
      .toThrow(/JWT_SECONDARY_SECRET: this is Supabase's published development secret/);
  });

  it('a short one is refused showing its length, never its value', () => {
    expect(() => loadConfig({ JWT_SECRET: SECRET, JWT_SECONDARY_SECRET: 'short-secret-value' }))
      .toThrow(/JWT_SECONDARY_SECRET: expected the JWT secret being rotated in or out, 32 characters at least/);
    expect(() => loadConfig({ JWT_SECRET: SECRET, JWT_SECONDARY_SECRET: 'short-secret-value' })).not.toThrow(/short-secret-value/);
  });

  it('verifies but never signs: a token signed with it is accepted, its claims checked as any other', async () => {
    const config = loadConfig({ JWT_SECRET: SECRET, JWT_SECONDARY_SECRET: DEV_JWT_SECRET });
    expect(config.auth.jwtSecret).toBe(SECRET);
    const verify = createTokenVerifier(config.auth);
    expect((await verify(await signAccessToken(DEV_JWT_SECRET, { sub: USER }), HTTP_USER_POLICY)).sub).toBe(USER);
    await expect(verify(await signAccessToken(DEV_JWT_SECRET, { sub: USER }, { expiresInSeconds: -60 }), HTTP_USER_POLICY))
      .rejects.toMatchObject({ code: 'expired' });
    await expect(verify(await signAccessToken('a-third-secret-of-at-least-32-characters!', { sub: USER }), HTTP_USER_POLICY))
      .rejects.toMatchObject({ code: 'invalid_token' });
  });
});

describe('REALTIME_CLUSTER_SECRET (the realtime cluster\'s key)', () => {
  // With it, any role that runs SQL signs cluster messages every gateway reads: broadcasts and
  // presence into any room, private ones included (docs/realtime.md, "Cluster"). Before, it was
  // taken in production, where the same value as JWT_SECRET was refused.
  it('refuses the published development secret in production, naming the variable, never showing the value', () => {
    const env = { NODE_ENV: 'production', JWT_SECRET: 'a-project-secret-of-at-least-32-characters', REALTIME_CLUSTER_SECRET: DEV_JWT_SECRET };
    expect(() => loadConfig(env)).toThrow(/^invalid environment: REALTIME_CLUSTER_SECRET: this is Supabase's published development secret/);
    expect(() => loadConfig(env)).not.toThrow(DEV_JWT_SECRET);
    expect(() => loadConfig({ NODE_ENV: 'production', SUPABASE_JWKS_URL: JWKS, REALTIME_CLUSTER_SECRET: DEV_JWT_SECRET }))
      .toThrow(/REALTIME_CLUSTER_SECRET: this is Supabase's published development secret/);
  });

  it('outside production it is taken (as JWT_SECRET is)', () => {
    expect(loadConfig({ REALTIME_CLUSTER_SECRET: DEV_JWT_SECRET }).realtime.clusterSecret).toBe(DEV_JWT_SECRET);
  });
});

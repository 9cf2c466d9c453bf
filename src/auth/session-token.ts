import { decodeJwt } from 'jose';
import type { Config } from '../config.ts';
import { signAccessToken } from './jwt.ts';

/** A user as internal.auth_user_json returns it (sql/auth/password.sql), as far as the token needs it. */
export type SessionUser = { id: string; email?: string | null; app_metadata?: unknown; user_metadata?: unknown };

/**
 * The access token of a sign-in session, as GoTrue mints it: claims sub, aud, role `authenticated`,
 * email, phone, app_metadata, user_metadata, aal `aal1`, amr [{method: 'password', timestamp:
 * signedInAt (epoch seconds of the sign-in)}], session_id (the refresh token family), is_anonymous,
 * iss (`JWT_ISSUER`, else `origin` + `/auth/v1` as GoTrue's API_EXTERNAL_URL, else none), exp
 * after `auth.accessTtl` seconds. Every endpoint that starts or refreshes a session mints it here
 * (/auth/v1, H5 /api/v1/auth/refresh), so a refreshed token passes every check the first one did
 * (the issuer when JWT_ISSUER is set, GoTrue's session check on session_id).
 */
export async function signSessionToken(auth: Config['auth'], session: { user: SessionUser; sessionId: string; signedInAt: number },
  origin?: string): Promise<{ token: string; expiresAt: number }> {
  const { user } = session;
  const token = await signAccessToken(auth.jwtSecret, {
    sub: user.id, role: 'authenticated', email: user.email ?? '', phone: '',
    app_metadata: user.app_metadata ?? {}, user_metadata: user.user_metadata ?? {},
    aal: 'aal1', amr: [{ method: 'password', timestamp: session.signedInAt }], session_id: session.sessionId, is_anonymous: false,
  }, { expiresInSeconds: auth.accessTtl, audience: auth.audience, issuer: auth.issuer ?? (origin === undefined ? undefined : `${origin}/auth/v1`) });
  return { token, expiresAt: decodeJwt(token).exp! };
}

import { createHmac, createSecretKey, hkdfSync, type KeyObject } from 'node:crypto';

/**
 * The keys the realtime cluster's messages are authenticated with (cluster.ts, "Authentication"):
 * `sign` goes on every message this node sends; a message is read only under one of `accept`
 * (`sign` first). Every gateway of a deployment derives them from secrets it already shares:
 *
 *  - REALTIME_CLUSTER_SECRET when set: that one alone;
 *  - else JWT_SECRET (every gateway checks tokens with it), and JWT_SECONDARY_SECRET accepted too:
 *    the JWT secret's rotation (docs/self-hosting.md, "Rotating the JWT secret") then rotates
 *    the cluster's key with it, and the gateways of each step read each other's messages.
 *
 * Never the secret itself: HKDF-SHA256 with a label of this purpose, so the key is no JWT secret
 * (a MAC key and a token-signing key are never the same bytes) and one leaked is not the other.
 * No secret at all (production with asymmetric keys only, SUPABASE_JWKS_URL without JWT_SECRET):
 * no key; the gateway refuses to start (config.ts realtimeConfigProblem) rather than run a cluster
 * that any database role could write to.
 */
export type ClusterKeys = { sign: KeyObject; accept: readonly KeyObject[] };

const INFO = 'potentia realtime cluster message MAC v1';

/** The 32-byte MAC key HKDF-SHA256 derives from `secret` for the cluster's messages. */
export function deriveClusterKey(secret: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), INFO, 32)));
}

/** The cluster's keys from the gateway's secrets (see above); undefined when there is none. */
export function clusterKeys(secrets: { clusterSecret?: string; jwtSecret: string; secondaryJwtSecret?: string }): ClusterKeys | undefined {
  if (secrets.clusterSecret) {
    const key = deriveClusterKey(secrets.clusterSecret);
    return { sign: key, accept: [key] };
  }
  if (!secrets.jwtSecret) return undefined;
  const sign = deriveClusterKey(secrets.jwtSecret);
  return { sign, accept: secrets.secondaryJwtSecret ? [sign, deriveClusterKey(secrets.secondaryJwtSecret)] : [sign] };
}

/** Which secret the keys come from (clusterKeys), as a gateway reports it. */
export function clusterKeySource(secrets: { clusterSecret?: string; jwtSecret: string; secondaryJwtSecret?: string }): 'REALTIME_CLUSTER_SECRET' | 'JWT_SECRET' | 'JWT_SECRET+JWT_SECONDARY_SECRET' {
  if (secrets.clusterSecret) return 'REALTIME_CLUSTER_SECRET';
  return secrets.secondaryJwtSecret ? 'JWT_SECRET+JWT_SECONDARY_SECRET' : 'JWT_SECRET';
}

/**
 * A short name of a key that gateways can compare, and an operator read off their logs and
 * /metrics: two gateways with the same fingerprint sign with the same key. A MAC under the key of
 * a fixed label (never bytes of the key or of its secret): it gives nothing to sign a message with.
 */
export function clusterKeyFingerprint(key: KeyObject): string {
  return createHmac('sha256', key).update('potentia realtime cluster key fingerprint').digest('hex').slice(0, 12);
}

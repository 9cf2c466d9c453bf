import type { IncomingMessage } from 'node:http';
import { clientAddressKey } from '../client-address.ts';
import type { SocketClaims } from './authorize.ts';
import { KeyedRateLimiter } from './rate-limit.ts';

/**
 * What one caller may cost a gateway process across all of its sockets, where the per-socket
 * limits (hub.ts) cannot see: how many WebSockets it holds open, and how many channel
 * authorizations (a private phx_join's RLS probe, an H1 connect's access check: each a database
 * transaction) it asks for per second.
 *
 * Who the caller is: a user's token names them (`sub`); a token without one (the anon or service
 * key, which anyone with the app holds) leaves only the address the socket comes from — the
 * peer's, or with TRUST_PROXY the first `X-Forwarded-For` entry, as the HTTP API reads it — an
 * IPv6 address counted by its /64 (clientAddressKey).
 *
 * Per process, not per cluster: N gateway processes admit N times these bounds, the way each
 * process bounds its own memory and its share of the database's connections. Supabase Realtime
 * bounds the same things per tenant (max_concurrent_users, max_joins_per_second).
 */
export type AdmissionLimits = {
  /** WebSockets (realtime-js and H1) open at once from one address. */
  maxSocketsPerAddress: number;
  /** WebSockets open at once whose connect token is one user's (H1 always; realtime-js when connected with a user's token). */
  maxSocketsPerUser: number;
  /** Channel authorizations per second per user (per address without one), in bursts up to authorizationBurst. */
  authorizationsPerSecond: number;
  authorizationBurst: number;
  /**
   * Client broadcasts and presence tracks per second per user (per address without one), across
   * sockets, in bursts up to callerMessageBurst. Each is relayed to the other gateways through
   * Postgres (cluster.ts: pg_logical_emit_message, WAL), so the per-socket limit alone let one
   * caller write it as fast as it opened sockets: with the public anon key, 1000 sockets of one
   * address at 10 messages of 16 KiB per second each.
   */
  callerMessagesPerSecond: number;
  callerMessageBurst: number;
};

/** The defaults (the two socket caps are also REALTIME_MAX_SOCKETS_PER_ADDRESS / _PER_USER, src/config.ts). */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = {
  // an office behind one NAT shares an address
  maxSocketsPerAddress: 1000,
  maxSocketsPerUser: 100,
  // a reconnect of two full sockets rejoins 2 x maxChannelsPerSocket private channels at once
  authorizationsPerSecond: 20,
  authorizationBurst: 200,
  // ten tabs, each at the per-socket limit (hub.ts: 10 per second)
  callerMessagesPerSecond: 100,
  callerMessageBurst: 200,
};

/** A socket's place in the counts, held from its upgrade request until it closes (or is refused). */
export type SocketTicket = {
  readonly address: string;
  /** Counts the socket against `userId`'s cap too; false (and nothing counted) when that is full. */
  claimUser(userId: string): boolean;
  /** Gives the socket's places back; a second call does nothing. */
  release(): void;
};

/** Which bound refused a caller (the metric's label: potentia_rate_limit_rejections_total{endpoint="realtime:<limit>"}). */
export type AdmissionLimit = 'sockets_per_address' | 'sockets_per_user' | 'authorizations' | 'messages';

export class Admission {
  private readonly byAddress = new Map<string, number>();
  private readonly byUser = new Map<string, number>();
  private readonly authorizations: KeyedRateLimiter;
  private readonly messages: KeyedRateLimiter;

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly trustProxy: boolean,
    /** Told of every refusal (metrics). */
    private readonly onRefused: (limit: AdmissionLimit) => void = () => {},
  ) {
    this.authorizations = new KeyedRateLimiter(limits.authorizationsPerSecond, limits.authorizationBurst);
    this.messages = new KeyedRateLimiter(limits.callerMessagesPerSecond, limits.callerMessageBurst);
  }

  /**
   * Whom an upgrade request is counted as, by the address it comes from (see the class comment):
   * its key (src/client-address.ts), so an IPv6 client is one caller per /64, not one per address
   * it picks.
   */
  addressOf(req: IncomingMessage): string {
    if (this.trustProxy) {
      const forwarded = req.headers['x-forwarded-for'];
      const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
      if (first) return clientAddressKey(first);
    }
    return clientAddressKey(req.socket.remoteAddress ?? 'unknown');
  }

  /** A ticket for one more socket from `address`, or the refusal's message when the address holds its cap. */
  admit(address: string): SocketTicket | string {
    if (!take(this.byAddress, address, this.limits.maxSocketsPerAddress)) {
      this.onRefused('sockets_per_address');
      return `too many WebSockets open from this address (at most ${this.limits.maxSocketsPerAddress}): close one first` +
        (this.trustProxy ? '' : '; behind a proxy, set TRUST_PROXY=1 so each client is told apart');
    }
    let user: string | null = null;
    let released = false;
    return {
      address,
      claimUser: (userId) => {
        if (released || user !== null) return true;
        if (!take(this.byUser, userId, this.limits.maxSocketsPerUser)) {
          this.onRefused('sockets_per_user');
          return false;
        }
        user = userId;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        give(this.byAddress, address);
        if (user !== null) give(this.byUser, user);
      },
    };
  }

  /**
   * Takes one channel authorization for the caller of `claims` (its user, else `address`): 0 when
   * allowed, else milliseconds until one is. service_role is authorized without a database probe
   * (authorize.ts), so it costs nothing and takes nothing.
   */
  authorize(claims: SocketClaims, address: string): number {
    return this.takeFor(this.authorizations, 'authorizations', claims, address);
  }

  /**
   * Takes one client message (a broadcast, a presence track) for the caller of `claims` across
   * its sockets, or `n` at once, all or none (a REST broadcast's messages, rest-broadcast.ts): 0
   * when allowed, else milliseconds until they are. service_role (a trusted server) takes nothing.
   */
  message(claims: SocketClaims, address: string, n = 1): number {
    return this.takeFor(this.messages, 'messages', claims, address, n);
  }

  /** One token of `limiter` for the caller (service_role: none), counting a refusal under `limit`. */
  private takeFor(limiter: KeyedRateLimiter, limit: AdmissionLimit, claims: SocketClaims, address: string, n = 1): number {
    if (claims.role === 'service_role') return 0;
    const waitMs = limiter.take(callerOf(claims, address), n);
    if (waitMs > 0) this.onRefused(limit);
    return waitMs;
  }
}

/**
 * The caller a limit across sockets counts: the user a token names, else the address (also whose
 * presences a key's bound counts, presence.ts PRESENCE_KEY_MAX_METAS).
 */
export function callerOf(claims: SocketClaims, address: string): string {
  return claims.sub ? `user:${claims.sub}` : `address:${address}`;
}

function take(counts: Map<string, number>, key: string, max: number): boolean {
  const n = counts.get(key) ?? 0;
  if (n >= max) return false;
  counts.set(key, n + 1);
  return true;
}

function give(counts: Map<string, number>, key: string): void {
  const n = (counts.get(key) ?? 1) - 1;
  if (n <= 0) counts.delete(key);
  else counts.set(key, n);
}

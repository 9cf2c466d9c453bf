import type { ReservedSql, Sql, TransactionSql } from 'postgres';
import type { CanvasLanes, TransactionScratch } from './canvas-lanes.ts';
import { runAgainOnLostConnection } from './faults.ts';

/**
 * Runs database work the way PostgREST runs an RPC: in one transaction whose transaction-local
 * settings carry the caller (`role`, `request.jwt.claims`, `request.headers`, `request.method`,
 * `request.path`), so auth.uid(), RLS and the audit's IP/UA behave exactly as on Supabase.
 */
export type RequestContext = {
  claims: { sub?: string; role?: string; [claim: string]: unknown };
  headers?: Record<string, string>;
  method?: string;
  path?: string;
  statementTimeoutMs?: number;
};

const API_ROLES = new Set(['anon', 'authenticated', 'service_role']);
export const DEFAULT_STATEMENT_TIMEOUT_MS = 5000;
/**
 * How long a request's transaction may sit idle between its statements before the server ends it
 * (idle_in_transaction_session_timeout, set with the caller). A request sends its next statement
 * or COMMIT within milliseconds; a process that stops mid-transaction without closing its
 * connection (frozen, its host or network gone: a killed process's socket is closed by its kernel,
 * these are not) held the transaction's locks until TCP noticed, hours later: a canvas row locked
 * by a rename was every writer's on that canvas, each answered 503 after its statement timeout.
 */
export const IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000;

export async function withRequest<T>(sql: Sql, ctx: RequestContext, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  const settings = callerSettings(ctx);
  // A connection lost before COMMIT was sent rolled everything back: run the request again on
  // another connection (the pool replaces the dead one). A loss during COMMIT is ambiguous and is
  // left to the caller (mutations are idempotent by client_op_id; HTTP answers 503). No session
  // could be opened at all: answered at once (503), not after waiting for the same refusal or
  // connect timeout twice more; nor is a request whose answer never came (answer_timeout, a
  // stalled path), which would wait as long again on the pool's other connections.
  // A try whose BEGIN was not answered ran nothing: its connection was dead when drawn, and is not
  // counted as a try (runAgainOnLostConnection).
  let begun = false;
  let committing = false;
  return runAgainOnLostConnection(() => {
    begun = committing = false;
    return once(sql, settings, async (tx) => {
      begun = true;
      const result = await work(tx);
      committing = true;
      return result;
    });
  }, { safe: () => !committing, answered: () => begun, pooled: sql.options.max });
}

function once<T>(sql: Sql, settings: CallerSettings, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    // Not awaited alone: the work's first statements are pipelined behind it (one round trip
    // less). Statements on a transaction run in order, so the work still runs as the caller; if
    // this one fails, the work's statements fail as "transaction aborted" and Promise.all rejects
    // with this error, the first to arrive (and either rejection is handled, whichever comes first).
    const context = setCaller(tx, settings).execute();
    const [, result] = await Promise.all([context, work(tx)]);
    return result;
  }) as Promise<T>;
}

/**
 * One statement as part of a lane transaction: BEGIN, then for each request of the group its
 * caller's settings (as withRequest sets them; once for consecutive statements with the same
 * settings) and its statements, then COMMIT,
 * pipelined on one connection. Postgres commits right after the group's last statement instead of
 * after a round trip back to this process: the locks the statements take (a mutation's canvas
 * row, which every writer on the canvas queues for) are not held while answers travel, and a group
 * costs one round trip. An error in the statement fails this request and rolls the group back (the
 * lane sends the others again); so does any earlier step's error of this request, first.
 *
 * The connection is the lane of `canvasId` (src/db/canvas-lanes.ts): this process's requests on
 * one canvas go down one connection in arrival order, and the ones that queue up meanwhile share
 * the next transaction, each with its own settings. `first` is a statement run as the caller
 * before any request of that transaction runs its own (the H2 endpoint limit: a rate-limit row
 * of the caller's own, which every transaction must take before its canvas row); `single`, the
 * statement that does the work of `first` and the request's own at once, sent instead of them
 * when the request is alone in its transaction.
 *
 * Only for statements that are safe to send again (the mutation RPCs, idempotent by
 * client_op_id): COMMIT is on its way before the statement's answer, so after a lost connection
 * the outcome is unknown (through a pooler such as PgBouncer the server may have committed what
 * this process never heard of). Nothing is run again here, unlike withRequest, whose retry relies
 * on COMMIT not having been sent yet: the failure is thrown (isConnectionFailure), the HTTP layer
 * answers 503 and the client sends the operation again with the same client_op_id. Except on a
 * connection that answered nothing since the lane reserved it (dead when drawn): the lane sends
 * the group again on another (src/db/canvas-lanes.ts).
 */
export async function requestStatement<R extends Record<string, unknown>>(lanes: CanvasLanes, canvasId: string, ctx: RequestContext,
  text: string, params: unknown[],
  options: { prepare?: boolean; first?: { text: string; params: unknown[] }; single?: { text: string; params: unknown[] } } = {}): Promise<R[]> {
  // every setting is a string before anything is written: a setting the driver then failed to
  // send would leave the statement running with the settings of the request before it in the group
  const settings = callerSettings(ctx);
  const prepare = options.prepare ?? true;
  const { first, single } = options;
  // the lane is the canvas's, whatever the id's spelling: HTTP and H1 accept upper-case hex digits
  return lanes.run<R[]>(canvasId.toLowerCase(), laneStatement(settings, prepare, text, params), {
    caller: settings.user,
    ...(first === undefined ? {} : { first: laneStatement(settings, prepare, first.text, first.params) }),
    ...(single === undefined ? {} : { single: laneStatement(settings, prepare, single.text, single.params) }),
  });
}

/**
 * One statement of requestStatement's, as its lane writes it. A module function, not a named
 * closure in requestStatement: under tsx (how the server runs: node --import tsx) esbuild's
 * keepNames names each named closure with Object.defineProperty every time it is created.
 */
function laneStatement(settings: CallerSettings, prepare: boolean, text: string, params: unknown[]) {
  return (conn: ReservedSql, scratch: TransactionScratch) => {
    // the settings are set once for consecutive statements of one caller (a request's `first` and
    // its own in a transaction of one; a caller's requests with the same settings): transaction-
    // local, they hold until the next caller's
    const context = sameSettings(scratch.settings, settings) ? null : setCaller(conn, settings).execute();
    // what the transaction runs as from here on, whatever happens to the statement below
    scratch.settings = settings;
    try {
      const result = conn.unsafe(text, params as never[], { prepare }).execute();
      return context === null ? [result] : [context, result];
    } catch (err) {
      context?.catch(() => {}); // its outcome no longer matters: the request fails with err
      throw err;
    }
  };
}

/** A caller's transaction-local settings, as text, and the user whose rows its statements may lock. */
export type CallerSettings = { role: string; claims: string; headers: string; method: string; path: string; timeout: string; idle: string; user: string | null };

/**
 * The caller's database role (an API role, else refused), claims and headers (names lower-cased)
 * as JSON, and the rest of its settings; throws (TypeError) when one of them is not text.
 */
function callerSettings(ctx: RequestContext): CallerSettings {
  const role = ctx.claims.role ?? 'anon';
  if (!API_ROLES.has(role)) throw new Error(`refusing to run as role ${JSON.stringify(role)}: not an API role`);
  const caller = callerOf(ctx.claims);
  const headers: Record<string, string> = {};
  for (const name in ctx.headers) if (Object.hasOwn(ctx.headers, name)) headers[name.toLowerCase()] = ctx.headers[name]!;
  const settings = {
    role,
    claims: caller.claims as unknown,
    headers: JSON.stringify(headers) as unknown,
    method: (ctx.method ?? 'POST') as unknown,
    path: (ctx.path ?? '') as unknown,
    timeout: (ctx.statementTimeoutMs == null ? DEFAULT_STATEMENT_TIMEOUT_TEXT : String(ctx.statementTimeoutMs)) as unknown,
    idle: IDLE_IN_TRANSACTION_TIMEOUT_TEXT as unknown,
    user: caller.user,
  };
  for (const name of TEXT_SETTINGS) {
    if (typeof settings[name] !== 'string') throw new TypeError(`the caller's ${name} cannot be sent as text`);
  }
  return settings as CallerSettings;
}

const TEXT_SETTINGS = ['role', 'claims', 'headers', 'method', 'path', 'timeout', 'idle'] as const;
const DEFAULT_STATEMENT_TIMEOUT_TEXT = String(DEFAULT_STATEMENT_TIMEOUT_MS);
const IDLE_IN_TRANSACTION_TIMEOUT_TEXT = String(IDLE_IN_TRANSACTION_TIMEOUT_MS);

/**
 * The claims' JSON text, and the user they name (`sub` in its canonical spelling: the lane's
 * caller key). Claims that can never change (deeply frozen: a verified token's payload, shared by
 * every request that sends the token, src/auth/jwt.ts) keep both, worked out once; any others
 * are worked out each time.
 */
type Caller = { claims: unknown; user: string | null };
const callers = new WeakMap<object, Caller>();
function callerOf(claims: RequestContext['claims']): Caller {
  const kept = callers.get(claims);
  if (kept !== undefined) return kept;
  const sub = claims.sub;
  const caller = { claims: JSON.stringify(claims) as unknown, user: typeof sub === 'string' && sub !== '' ? laneUuid(sub) ?? sub : null };
  if (typeof caller.claims === 'string' && deeplyFrozen(claims)) callers.set(claims, caller);
  return caller;
}

function deeplyFrozen(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return true;
  return Object.isFrozen(value) && Object.values(value).every(deeplyFrozen);
}

/** Whether `a` (what a transaction's statements so far left set) is the same settings as `b`. */
function sameSettings(a: CallerSettings | undefined, b: CallerSettings): boolean {
  return a !== undefined && (a === b || (a.role === b.role && a.claims === b.claims && a.headers === b.headers && a.method === b.method
    && a.path === b.path && a.timeout === b.timeout && a.idle === b.idle));
}

/** The statement that makes the rest of the transaction run as the caller, PostgREST-style. */
function setCaller(q: TransactionSql | ReservedSql, s: CallerSettings) {
  return q`select set_config('role', ${s.role}, true),
                  set_config('request.jwt.claims', ${s.claims}, true),
                  set_config('request.headers', ${s.headers}, true),
                  set_config('request.method', ${s.method}, true),
                  set_config('request.path', ${s.path}, true),
                  set_config('statement_timeout', ${s.timeout}, true),
                  set_config('idle_in_transaction_session_timeout', ${s.idle}, true),
                  -- every request was read through the input policy (src/input-policy.ts) before it
                  -- got here: internal.check_json_policy need not walk its JSON again
                  set_config('potentia.input_policy', 'checked', true),
                  -- the server counts each endpoint's limit where it answers it (or, for its own
                  -- calls, not at all): the api functions need not count it again
                  -- (internal.count_endpoint_call, sql/rpc/endpoint_limits.sql)
                  set_config('potentia.endpoint_limits', 'server', true)`;
}

/**
 * A uuid in its canonical spelling (lower case, 8-4-4-4-12), from any spelling Postgres's uuid input
 * accepts (upper case, braces, hyphens after any group of four digits or none); null for anything
 * else. The caller key of a lane: one user, one key, however the token spells the id.
 */
function laneUuid(text: string): string | null {
  const m = /^\{?((?:[0-9a-f]{4}-?){7}[0-9a-f]{4})\}?$/i.exec(text);
  if (m === null) return null;
  const hex = m[1]!.replace(/-/g, '').toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

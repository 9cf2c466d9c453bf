import type { Sql, TransactionSql } from 'postgres';
import { isConnectionFailure } from './faults.ts';

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

export async function withRequest<T>(sql: Sql, ctx: RequestContext, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  const role = ctx.claims.role ?? 'anon';
  if (!API_ROLES.has(role)) throw new Error(`refusing to run as role ${JSON.stringify(role)}: not an API role`);
  const headers = Object.fromEntries(Object.entries(ctx.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  // A connection lost before COMMIT was sent rolled everything back: run the request again on
  // another connection (the pool replaces the dead one). A loss during COMMIT is ambiguous and is
  // left to the caller (mutations are idempotent by client_op_id; HTTP answers 503).
  for (let attempt = 0; ; attempt++) {
    let committing = false;
    try {
      return await once(sql, ctx, role, headers, async (tx) => {
        const result = await work(tx);
        committing = true;
        return result;
      });
    } catch (err) {
      if (committing || attempt >= CONNECTION_RETRIES || !isConnectionFailure(err)) throw err;
    }
  }
}

/** How often a request is run again after its connection was lost before COMMIT. */
const CONNECTION_RETRIES = 2;

function once<T>(sql: Sql, ctx: RequestContext, role: string, headers: Record<string, string>, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    // Not awaited alone: the work's first statements are pipelined behind it (one round trip
    // less). Statements on a transaction run in order, so the work still runs as the caller; if
    // this one fails, the work's statements fail as "transaction aborted" and Promise.all rejects
    // with this error, the first to arrive (and either rejection is handled, whichever comes first).
    const context = tx`select set_config('role', ${role}, true),
                    set_config('request.jwt.claims', ${JSON.stringify(ctx.claims)}, true),
                    set_config('request.headers', ${JSON.stringify(headers)}, true),
                    set_config('request.method', ${ctx.method ?? 'POST'}, true),
                    set_config('request.path', ${ctx.path ?? ''}, true),
                    set_config('statement_timeout', ${String(ctx.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS)}, true)`.execute();
    const [, result] = await Promise.all([context, work(tx)]);
    return result;
  }) as Promise<T>;
}

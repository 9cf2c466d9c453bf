import type { Sql, TransactionSql } from 'postgres';

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
  return sql.begin(async (tx) => {
    await tx`select set_config('role', ${role}, true),
                    set_config('request.jwt.claims', ${JSON.stringify(ctx.claims)}, true),
                    set_config('request.headers', ${JSON.stringify(headers)}, true),
                    set_config('request.method', ${ctx.method ?? 'POST'}, true),
                    set_config('request.path', ${ctx.path ?? ''}, true),
                    set_config('statement_timeout', ${String(ctx.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS)}, true)`;
    return work(tx);
  }) as Promise<T>;
}

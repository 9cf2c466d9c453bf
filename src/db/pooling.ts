/**
 * Which connection each part of Potentia uses, as Supabase splits them: DATABASE_URL may be a
 * transaction pooler (PgBouncer `pool_mode = transaction`, Supavisor on :6543), where a server
 * connection is ours for one transaction only; DIRECT_DATABASE_URL reaches Postgres itself.
 *
 *   through DATABASE_URL   the server's pool (HTTP, H1 mutations, realtime authorization and
 *                          catch-up reads, cluster messages), the worker's task/heartbeat/outbox
 *                          pool, Graphile Worker's job queries
 *   through the direct URL the realtime bus's logical replication stream (a walsender session),
 *                          Graphile Worker's LISTEN "jobs:insert" client (src/worker/queue-pool.ts),
 *                          migrations (scripts/migrate.ts)
 *
 * Everything on the pooled side keeps its state inside one transaction: request settings are
 * `set_config(…, true)` (src/db/request.ts), locks are `pg_advisory_xact_lock`. What a pooler
 * without `max_prepared_statements` (PgBouncer < 1.21, Debian 12 has 1.18) cannot carry is a
 * named prepared statement: the next transaction may run on a server connection that never
 * prepared it (error 26000 inside a transaction), so prepared statements are off there.
 */
export type ConnectionUrls = {
  /** DATABASE_URL: pooled or direct. */
  pooled: string;
  /** DIRECT_DATABASE_URL, or DATABASE_URL when that is unset. */
  direct: string;
  /** DIRECT_DATABASE_URL is set and differs: DATABASE_URL is taken for a transaction pooler. */
  transactionPooler: boolean;
};

export function connectionUrls(c: { databaseUrl: string; directDatabaseUrl?: string }): ConnectionUrls {
  const direct = c.directDatabaseUrl ?? c.databaseUrl;
  return { pooled: c.databaseUrl, direct, transactionPooler: direct !== c.databaseUrl };
}

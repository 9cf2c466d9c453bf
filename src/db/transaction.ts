import type { Sql, TransactionSql } from 'postgres';
import { isConnectionFailure } from './faults.ts';

/**
 * `sql.begin(work)`, except that a transaction whose connection was lost rejects with what the
 * server said. postgres.js rejects the transaction with the closed socket (`write
 * CONNECTION_CLOSED host:port`) as soon as it closes, while the statement in flight gets the
 * server's own error a moment later (`terminating connection due to administrator command`,
 * 57P01): that one says what happened. `work` may wrap it (as the cause of its own error).
 */
export async function begin<T>(sql: Sql, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  let inner: unknown = null;
  let settled: Promise<unknown> = Promise.resolve();
  try {
    return await sql.begin((tx) => {
      const done = work(tx);
      settled = done.catch((err: unknown) => { inner = err; });
      return done;
    }) as T;
  } catch (caught) {
    if (!isConnectionFailure(caught)) throw caught;
    await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    throw [inner, (inner as Error | null)?.cause].find((e) => e != null && isConnectionFailure(e)) ?? caught;
  }
}

import type { Sql } from 'postgres';

/**
 * Writes a non-transactional logical message (`pg_logical_emit_message(false, prefix, content)`)
 * through `sql`: no table row, decoded by every logical replication stream (bus.ts) as soon as its
 * WAL is flushed. On PostgreSQL < 17 nothing flushes it (the `flush` argument is new in 17), so the
 * same statement takes a transaction id (`pg_current_xact_id()`): its commit then flushes the WAL,
 * message included. `serverVersionNum` is the server's `server_version_num`. Returns the
 * message's LSN (text, as pg_lsn prints it).
 */
export async function emitLogicalMessage(sql: Sql, prefix: string, content: Uint8Array, serverVersionNum: number): Promise<string> {
  const [row] = (serverVersionNum < 170000
    ? await sql`select pg_logical_emit_message(false, ${prefix}, ${content}::bytea)::text as lsn, pg_current_xact_id()`
    : await sql`select pg_logical_emit_message(false, ${prefix}, ${content}::bytea, true)::text as lsn`) as unknown as [{ lsn: string }];
  return row.lsn;
}

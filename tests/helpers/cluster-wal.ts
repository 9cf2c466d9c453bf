import type { Sql } from 'postgres';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';

const escaped = CLUSTER_MESSAGE_PREFIX.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** test_decoding's line for a logical message: its bytes follow `content:`. */
const MESSAGE = new RegExp(`^message: transactional: \\d prefix: ${escaped}, sz: (\\d+) content:`);

/**
 * The content of every realtime cluster message in the WAL since the test_decoding slot `slot`
 * was made, in WAL order, as written (copied: a test may write one again). Peeks: the slot keeps
 * them.
 */
export async function clusterMessagesInWal(sql: Sql, slot: string): Promise<Buffer[]> {
  const rows = await sql<{ data: Buffer }[]>`select data from pg_logical_slot_peek_binary_changes(${slot}, null, null)`;
  const out: Buffer[] = [];
  for (const { data } of rows) {
    const m = MESSAGE.exec(data.toString('latin1'));
    if (m) out.push(Buffer.from(data.subarray(m[0].length, m[0].length + Number(m[1]))));
  }
  return out;
}

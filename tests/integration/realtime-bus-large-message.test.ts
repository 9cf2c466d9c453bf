import { randomUUID } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX, createDatabaseBus } from '../../src/realtime/bus.ts';
import { testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';

// pg_logical_emit_message is PUBLIC's and pgoutput with `messages` sends every logical message to
// every gateway's stream, whatever its prefix: any role that runs SQL (here `authenticated`) can
// put one of hundreds of MiB on it (the realtime cluster's MAC drops it, but only once it has
// arrived). It takes the walsender seconds to write to the gateway (waiting on WalSenderWriteData)
// and the gateway to take in, and the bus counted as activity only whole messages: it wrote a
// probe, saw nothing whole arrive, found the walsender writing rather than decoding, and took the
// stream for stalled. One statement made every gateway drop its stream and reconnect (seen with
// three gateway processes and one 256 MiB message: one of them, "realtime replication stream
// stalled"). Now bytes coming in count as activity.
//
// The bus's probe and stall bounds are made short here (50 ms, 200 ms; the defaults are seconds) so
// that the transfer of one 64 MiB message outlasts them, but not so short that a loaded machine's
// scheduling lag alone looks like a stall (the old code still failed 2 of 3 runs at these bounds).

const db = testDatabase(2);

afterAll(async () => {
  await db.close();
});

it('a logical message of 64 MiB written by a database user does not make the bus take its stream for stalled', async () => {
  const bus = createDatabaseBus({ databaseUrl: testDatabaseUrl(), sql: db.sql, tickMs: 5, probeAfterMs: 50, stallMs: 200 });
  let downs = 0;
  const got: Buffer[] = [];
  bus.onStreamState((up) => { if (!up) downs++; });
  bus.onClusterMessage((content) => { if (content.length < 100) got.push(content); });
  await bus.start();
  try {
    await until(() => bus.streaming(), 30_000, 'the bus\'s stream');
    const marker = Buffer.from(randomUUID());
    await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, decode(repeat('00', 64 * 1024 * 1024), 'hex')), pg_current_xact_id()`;
    });
    await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${marker}::bytea), pg_current_xact_id()`;
    });
    // the marker comes after the large message in the WAL: once it is here, so was that one. A
    // stream restarted meanwhile (its new slot begins after the marker) never delivers it
    await until(() => downs > 0 || got.some((m) => m.equals(marker)), 60_000, 'the message written after the large one, or the stream lost');
    expect({ downs, reconnects: bus.stats().reconnects, marker: got.some((m) => m.equals(marker)) }).toEqual({ downs: 0, reconnects: 0, marker: true });
  } finally {
    await bus.stop();
  }
}, 120_000);

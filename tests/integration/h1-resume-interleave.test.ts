// H1's guarantee after a `resume` (h1-protocol.ts): every applied operation above since_canvas_seq
// exactly once, in canvas_seq order, the log's first (`replaying`), then `resumed`, then live ones.
// A resume waits its turn behind the socket's earlier messages (a mutate, say), and until it ran
// the live stream went on: the delta of a mutate sent before the resume, committed while the resume
// waited, went out live, and then again in the resume's replay (a canvas_seq twice, out of order).
// Live deltas are now held from the moment a resume is read, as while its replay runs. Made
// deterministic: a second mutate waits (the test holds its block's row) while the first one's
// delta reaches the gateway.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { reservedTransaction, testDatabase, type ReservedTransaction } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { h1TestServer, openH1 } from '../helpers/h1.ts';
import { tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(3);
const served = h1TestServer(() => db.close());

describe('an H1 resume behind a mutate', () => {
  it('the mutate\'s delta, committed while the resume waited its turn, comes once, in the replay', async () => {
    const { server } = served;
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const x = (await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { n: 0 } } })).block_id!;
    const h1 = await openH1(server.url, canvasId, await tokenFor(server, users.editor!), '&since_canvas_seq=0');
    let holder: ReservedTransaction | undefined;
    try {
      expect(await h1.next((m) => m.type === 'resumed')).toMatchObject({ canvas_watermark: 1 }); // live from canvas_seq 1
      holder = await reservedTransaction(db.sql);
      await holder.conn`select from app.blocks where block_id = ${x} for update`;
      const from = h1.inbox.length;
      const delivered = server.gateway!.bus.stats().delivered;
      h1.send({ type: 'mutate', client_op_id: 'first', action: 'create', patch: { type: 'text', content: { n: 1 } } });
      h1.send({ type: 'mutate', client_op_id: 'second', action: 'update', block_id: x, base_version: 1, patch: { y_order: 'zz' } });
      h1.send({ type: 'resume', since_canvas_seq: 1 });
      await holder.waitedFor('the second mutate waiting for the held block');
      await until(() => server.gateway!.bus.stats().delivered > delivered, 10_000, 'the first mutate\'s delta at the gateway');
      await holder.end('rollback');
      await h1.next((m) => m.type === 'resumed');
      const after = h1.inbox.slice(from).filter((m) => m.type !== 'ack');
      const shown = after.map((m: ServerMessage) => (m.type === 'delta' ? `${m.canvas_seq}${m.replaying ? ' replaying' : ' live'}` : m.type));
      expect(shown).toEqual(['2 replaying', '3 replaying', 'resumed']);
    } finally {
      await holder?.release();
      h1.ws.close();
    }
  });
});

// A token whose `sub` spells its user's id in upper case (the verifier admits a UUID in any case,
// and the database reads it as the same user: auth.uid() casts it): two `npm start` processes,
// a realtime-js channel and an H1 socket on the second opened with such a token, and the member
// removed by plain SQL. The database announces the change for the user's canonical id
// (access_changed {user_id}); the sockets must be re-checked and closed like those of a token
// that spells it in lower case, and get nothing committed after the removal.
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { realtimeClients } from '../helpers/realtime.ts';
import { signClaims, userClaims } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(3);
const realtime = realtimeClients();
const processes: PotentiaProcess[] = [];

beforeAll(async () => {
  const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off' };
  processes.push(...(await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env)])));
}, 120_000);
afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all(processes.map((p) => p.stop()));
  await db.close();
}, 60_000);

type Watch = { ops: number[]; system: string[]; closed: boolean };
function subscribe(p: PotentiaProcess, token: string, canvasId: string): Promise<Watch> {
  const w: Watch = { ops: [], system: [], closed: false };
  const channel: RealtimeChannel = realtime.connect(p.url, token, '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
    .on('broadcast', { event: 'block_op' }, (m) => w.ops.push(Number(m.payload.server_seq)))
    .on('system', {}, (m) => w.system.push(String(m.message)));
  return new Promise((resolve, reject) => channel.subscribe((status, err) => {
    if (status === 'SUBSCRIBED') resolve(w);
    else if (status === 'CLOSED') w.closed = true;
    else reject(err ?? new Error(status));
  }));
}

it('a removed member whose token spells its id in upper case is re-checked and closed on realtime-js and H1, and gets nothing after', async () => {
  const [a, b] = processes as [PotentiaProcess, PotentiaProcess];
  const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
  const editor = users.editor!;
  const upper = await signClaims(config.auth.jwtSecret, userClaims(editor.toUpperCase()));
  const witnessToken = await signClaims(config.auth.jwtSecret, userClaims(users.owner!));
  const revoked = await subscribe(b, upper, canvasId);
  const witness = await subscribe(b, witnessToken, canvasId);
  const h1 = await openH1(b.url, canvasId, upper, '&since_seq=0');
  await h1.next((m) => m.type === 'resumed');
  const before = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'before' } } });
  await until(() => revoked.ops.includes(before.server_seq!) && witness.ops.includes(before.server_seq!), 10_000, 'the first delta');
  await h1.next((m) => m.type === 'delta' && m.server_seq === before.server_seq);

  await db.sql`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${editor}`;
  const after = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'after' } } });
  await until(() => witness.ops.includes(after.server_seq!), 10_000, 'the witness to get the delta after the removal');
  await until(() => revoked.closed, 10_000, 'the removed member\'s channel to close');
  expect(revoked.system.some((m) => m.startsWith('Unauthorized'))).toBe(true);
  expect(revoked.ops).not.toContain(after.server_seq);
  expect((await h1.closed).code).toBe(4403);
  expect(h1.inbox.some((m) => m.type === 'delta' && m.server_seq === after.server_seq)).toBe(false);
}, 60_000);

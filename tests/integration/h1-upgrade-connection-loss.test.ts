// An H1 upgrade (GET /ws/canvas/{id}) checks the user's access to the canvas in the database before
// the socket opens. A check whose connection was lost (a backend terminated, a failover, a pooler
// restart) was answered 500 `internal` ("the WebSocket upgrade failed") and logged as an error, as
// if the gateway were broken; the HTTP API answers the same loss 503 `unavailable` with
// Retry-After, and so does a realtime-js join (its reply's reason). Now the upgrade is answered as
// the HTTP API answers, and the next upgrade is served. The check is a probe that is always rolled
// back, run again on another connection when its own was lost (runAgainOnLostConnection, as an API
// request is): one loss is not seen at all; a loss at every try is answered 503.
import WebSocket from 'ws';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { CONNECTION_RETRIES } from '../../src/db/faults.ts';
import { reservedTransaction } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { h1TestServer, openH1 } from '../helpers/h1.ts';
import { tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

const admin = postgres(testDatabaseUrl(), { max: 3, onnotice: () => {} });
const served = h1TestServer(() => admin.end());

/** The refused upgrade's status, Retry-After and JSON body. */
function refusedUpgrade(url: string): Promise<{ status: number; retryAfter: string | undefined; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => { ws.close(); reject(new Error('the upgrade was accepted')); });
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    ws.once('error', () => {});
  });
}

/**
 * Terminates the access check's backend once it waits for realtime.messages' lock (held by the
 * test): a backend not in `terminated` (its pids so far, added to), since a terminated backend can
 * still be listed, waiting, until it has exited; counted again, one try of the check went untouched.
 */
async function terminateWaitingCheck(terminated: number[] = []): Promise<void> {
  await until(async () => {
    const killed = await admin<{ pid: number }[]>`select pid, pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and application_name = 'potentia-server'
        and wait_event_type = 'Lock' and query like '%authorization_probe%' and pid <> all(${terminated}::int[])`;
    terminated.push(...killed.map((r) => r.pid));
    return killed.length > 0;
  }, 10_000, 'the access check waiting for the table');
}

describe('an H1 upgrade whose access check loses its database connection', () => {
  it('is answered 503 unavailable with Retry-After (not 500 internal) when it loses it at every try; the next upgrade is served', async () => {
    const { server } = served;
    const { canvasId, users } = await createCanvas(admin, ['editor']);
    const token = await tokenFor(server, users.editor!);
    const locker = await reservedTransaction(admin);
    try {
      // the check's first statement (its probe row in realtime.messages) waits here ...
      await locker.conn`lock table realtime.messages in share row exclusive mode`;
      const refused = refusedUpgrade(`${server.url.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${token}`);
      // ... and its backend is terminated there, at the first try and at each try again
      const terminated: number[] = [];
      for (let attempt = 0; attempt <= CONNECTION_RETRIES; attempt++) await terminateWaitingCheck(terminated);
      expect(terminated).toHaveLength(CONNECTION_RETRIES + 1); // one backend per try
      await locker.end('rollback');
      expect(await refused).toEqual({ status: 503, retryAfter: '1',
        body: { error: { code: 'unavailable', message: expect.stringMatching(/^the database connection was lost/), retry_after: 1 } } });
    } finally {
      await locker.release();
    }
    const h1 = await openH1(server.url, canvasId, token);
    try {
      expect(await h1.next((m) => m.type === 'hello')).toMatchObject({ canvas_id: canvasId });
    } finally {
      h1.ws.close();
    }
  });

  it('is served when the check loses its connection once (run again on another)', async () => {
    const { server } = served;
    const { canvasId, users } = await createCanvas(admin, ['editor']);
    const token = await tokenFor(server, users.editor!);
    const locker = await reservedTransaction(admin);
    let opening: ReturnType<typeof openH1> | undefined;
    try {
      await locker.conn`lock table realtime.messages in share row exclusive mode`;
      opening = openH1(server.url, canvasId, token);
      opening.catch(() => {});
      await terminateWaitingCheck();
      await locker.end('rollback');
    } finally {
      await locker.release();
    }
    const h1 = await opening!;
    try {
      expect(await h1.next((m) => m.type === 'hello')).toMatchObject({ canvas_id: canvasId });
    } finally {
      h1.ws.close();
    }
  });
});

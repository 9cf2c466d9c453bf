// A transaction pooler with no server for a session (PgBouncer while PostgreSQL is down) accepts
// the login, then refuses the session's first query (postgres.js's array types fetch) with a
// FATAL 08P01 and closes it. postgres.js (before patches/postgres+3.4.9.patch) opened such a
// session again at once for the caller, for ever, and a reservation (sql.reserve(), as canvas
// lanes take) was never refused: the caller hung for as long as the pooler had no server. A fake
// pooler here, so the test needs neither PgBouncer nor a server to stop
// (pgbouncer-restart.test.ts runs the real one).
import { createServer, type Server, type Socket } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { couldNotConnect } from '../../src/db/faults.ts';
import { reconnectBackoffSeconds } from '../../src/db/index.ts';

const REFUSAL = 'server login has been failing, cached error: connect failed (server_login_retry)';

/** A backend message: its type byte, its length, its body. */
const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const int32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
const authenticationOk = message('R', int32(0));
const readyForQuery = message('Z', Buffer.from('I'));
const refusal = message('E', Buffer.from(`SFATAL\0VFATAL\0C08P01\0M${REFUSAL}\0\0`));

let pooler: Server;
let port = 0;
let sessions = 0;

beforeAll(async () => {
  pooler = createServer((socket: Socket) => {
    sessions++;
    let started = false;
    socket.on('error', () => {});
    socket.on('data', () => {
      // the first packet is the startup message (no SSL asked for); whatever follows is a query
      if (!started) {
        started = true;
        socket.write(Buffer.concat([authenticationOk, readyForQuery]));
      } else {
        socket.end(refusal);
      }
    });
  });
  await new Promise<void>((resolve) => pooler.listen(0, '127.0.0.1', resolve));
  port = (pooler.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((resolve) => pooler.close(resolve));
});

type Outcome = { ok: true } | { ok: false; error: unknown } | { hang: true };
const settle = (p: Promise<unknown>, ms = 3000): Promise<Outcome> => Promise.race([
  p.then(() => ({ ok: true as const }), (error: unknown) => ({ ok: false as const, error })),
  new Promise<Outcome>((resolve) => setTimeout(() => resolve({ hang: true }), ms)),
]);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a session the pooler refuses at its first query', () => {
  it('fails the query and the reservation it was opened for with the refusal, one session each, not again', async () => {
    const sql = postgres({ host: '127.0.0.1', port, user: 'postgres', database: 'potentia', max: 2, onnotice: () => {},
      backoff: reconnectBackoffSeconds, connect_timeout: 5 });
    try {
      const refused = { ok: false, error: expect.objectContaining({ code: '08P01', message: REFUSAL }) };
      const reservation = await settle(sql.reserve());
      expect(reservation).toEqual(refused);
      expect(couldNotConnect((reservation as { error: unknown }).error)).toBe(true);
      expect(sessions).toBe(1);
      expect(await settle(sql`select 1`)).toEqual(refused);
      expect(sessions).toBe(2);
      // reservations and a query waiting at once on the pool's two connections: each refused, one
      // session each. A reservation waits in the pool's queue while a connection opens a session
      // for it; the other connection, refused meanwhile, opened a second session for it (postgres.js
      // does so), after its backoff, when the first had already been refused
      for (let round = 0; round < 5; round++) {
        const before = sessions;
        expect(await Promise.all([settle(sql.reserve()), settle(sql`select 1`), settle(sql.reserve())])).toEqual([refused, refused, refused]);
        await sleep(500); // past the backoff (at most 300 ms)
        expect(sessions - before, `round ${round}: one session per waiter`).toBe(3);
      }
      const after = sessions;
      await sleep(500);
      expect(sessions, 'no session opened once nothing waits').toBe(after);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

// A postgres.js session fails while it starts, in its array types fetch (the first query of every
// session, run before the caller's): the pooler refuses it (PgBouncer's "server login has been
// failing", 08P01), the server terminates it (pg_terminate_backend, 57P01) or crashes (57P02), or
// the socket closes or is reset. The caller's promise is the only one anybody awaits: the fetch's
// own is postgres.js's, dropped by its ReadyForQuery handler. Rejected unhandled, Node 20 ends the
// process (its default for an unhandled rejection): `npm run worker` has no handler of its own,
// and main.ts's only logs it as a bug. Each fault here, under a query and under a reservation
// (what canvas lanes take), settles the caller, leaves no rejection unhandled, and the pool
// serves after. A proxy in front of the real server injects the fault into the session's fetch.
import { connect, createServer, type Server, type Socket } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { reconnectBackoffSeconds } from '../../src/db/index.ts';
import { sleep } from '../helpers/wait.ts';

const FAULTS = ['refused', 'terminated', 'crashed', 'closed', 'reset'] as const;
type Fault = (typeof FAULTS)[number];

const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const fatal = (code: string, text: string) => message('E', Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${text}\0\0`));
const FATAL: Record<Exclude<Fault, 'closed' | 'reset'>, Buffer> = {
  refused: fatal('08P01', 'server login has been failing, cached error: connect failed (server_login_retry)'),
  terminated: fatal('57P01', 'terminating connection due to administrator command'),
  crashed: fatal('57P02', 'terminating connection because of crash of another server process'),
};

let proxy: Server;
let port = 0;
/** The faults the next sessions' types fetches get, one each; a session past them is forwarded untouched. */
const planned: Fault[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => { unhandled.push(reason); };

beforeAll(async () => {
  const upstream = new URL(testDatabaseUrl());
  proxy = createServer((client: Socket) => {
    const server = connect(Number(upstream.port || 5432), upstream.hostname);
    const end = () => { client.destroy(); server.destroy(); };
    client.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
    server.pipe(client);
    client.on('data', (chunk: Buffer) => {
      // the fetch is the session's first query: postgres.js writes it in one piece
      const fault = chunk.includes('typarray') ? planned.shift() : undefined;
      if (!fault) return void server.write(chunk);
      server.unpipe(client);
      server.destroy();
      if (fault === 'reset') client.resetAndDestroy();
      else if (fault === 'closed') client.end();
      else client.end(FATAL[fault]);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  port = (proxy.address() as { port: number }).port;
  process.on('unhandledRejection', onUnhandled);
});

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await new Promise((resolve) => proxy.close(resolve));
});

const settle = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? String(e));

describe('a session that fails in its array types fetch', () => {
  it.each(['query', 'reservation'] as const)('settles the %s it was opened for, and no rejection is left unhandled', async (caller) => {
    const upstream = new URL(testDatabaseUrl());
    const outcomes: Record<string, string> = {};
    for (const fault of FAULTS) {
      // a pool per fault: each fault meets a session that starts
      const sql = postgres({ host: '127.0.0.1', port, user: decodeURIComponent(upstream.username), pass: decodeURIComponent(upstream.password) || undefined,
        database: upstream.pathname.slice(1), max: 2, onnotice: () => {}, backoff: reconnectBackoffSeconds, connect_timeout: 5 });
      try {
        planned.push(fault);
        outcomes[fault] = await settle(caller === 'query' ? sql`select 1` : sql.reserve().then((r) => r`select 1`.finally(() => r.release())));
        expect(planned, `${fault}: the fault reached a fetch`).toEqual([]);
        await sleep(50); // an unhandled rejection is reported once the microtask queue has drained
        expect(await settle(sql`select 1`), `${fault}: the pool serves after`).toBe('ok');
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
    // a refusal fails the caller (the session never started); a session the server ended, or
    // that closed, starts afresh for it; a reset fails the query the session was opened for (it
    // may have been written), while a reservation, not handed its connection yet, gets a new one
    expect(outcomes).toEqual({ refused: '08P01', terminated: 'ok', crashed: 'ok', closed: 'ok', reset: caller === 'query' ? 'ECONNRESET' : 'ok' });
    expect(unhandled).toEqual([]);
  });
});

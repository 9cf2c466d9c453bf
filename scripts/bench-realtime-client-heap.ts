// npx tsx scripts/bench-realtime-client-heap.ts [--clients 2500] [--processes 1] [--deltas 50] [--rate 5] [--rounds 3] [--semi-space 64]
//
// What one bench-realtime subscriber process pays per delivery with V8's young generation and with
// --max-semi-space-size=<--semi-space> (bench-realtime.ts --subscriber-semi-space), in alternated
// rounds: --clients @supabase/realtime-js clients in each of --processes forked processes (ws transport, vsn 2.0.0,
// a private channel, the bench's `block_op` callback), each joined to a minimal Phoenix-speaking
// `ws` server in this process, which sends the same text frame bench-realtime's subscribers receive
// (a block_op delta of a text block, ~930 bytes) to all of them --deltas times at --rate/s.
// Printed per round: the client processes' user + system CPU over the deltas, per delivery. No
// database, no gateway: only the client side, the part of the scale row's CPU per delivery that
// realtime-js and its process spend.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { RealtimeClient } from '@supabase/realtime-js';
import { WebSocketServer, WebSocket } from 'ws';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';

const { number } = parseCommandLine({
  options: {
    clients: { type: 'string', default: '2500' }, processes: { type: 'string', default: '1' }, deltas: { type: 'string', default: '50' }, rate: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' }, 'semi-space': { type: 'string', default: '64' },
  },
}, 'usage: npx tsx scripts/bench-realtime-client-heap.ts [--clients 2500] [--processes 1] [--deltas 50] [--rate 5] [--rounds 3] [--semi-space 64]');
const CLIENTS = number('clients', wholeNumber(1));
const PROCESSES = number('processes', wholeNumber(1, 16));
const DELTAS = number('deltas', wholeNumber(1));
const RATE = number('rate', decimalNumber(0, 100, { above: true }));
const ROUNDS = number('rounds', wholeNumber(1));
const SEMI_SPACE = number('semi-space', wholeNumber(1, 1024));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type ToChild = { cmd: 'connect'; url: string } | { cmd: 'usage' };
type FromChild = { joined: number } | { cpuUs: number; received: number };

if (process.env.BENCH_CLIENT_HEAP_CHILD === '1') {
  // the clients, as bench-realtime.ts's subscribersMain makes them
  const subs: { seqs: number[]; times: number[] }[] = [];
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  process.on('message', async (m: ToChild) => {
    if (m.cmd === 'usage') {
      const c = process.cpuUsage();
      process.send!({ cpuUs: c.user + c.system, received: subs.reduce((n, s) => n + s.seqs.length, 0) } satisfies FromChild);
      return;
    }
    let next = 0;
    await Promise.all(Array.from({ length: 50 }, async () => {
      while (next < CLIENTS) {
        next++;
        const sub = { seqs: [] as number[], times: [] as number[] };
        subs.push(sub);
        const client = new RealtimeClient(m.url, { params: { apikey: 'bench' }, transport: WebSocket as any, vsn: '2.0.0', timeout: 30_000 });
        const channel = client.channel('canvas:bench', { config: { private: true } }).on('broadcast', { event: 'block_op' }, (msg) => {
          const t = now();
          sub.seqs.push(Number((msg.payload as { server_seq: unknown }).server_seq));
          sub.times.push(t);
        });
        await new Promise<void>((resolve, reject) => channel.subscribe((status) => {
          if (status === 'SUBSCRIBED') resolve();
          else if (status !== 'CLOSED') reject(new Error(status));
        }));
      }
    }));
    process.send!({ joined: subs.length } satisfies FromChild);
  });
} else {
  const joined = new Set<WebSocket>();
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  server.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('close', () => joined.delete(ws));
    ws.on('message', (data) => {
      const [joinRef, ref, topic, event] = JSON.parse(data.toString()) as [string | null, string | null, string, string];
      ws.send(JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'ok', response: event === 'phx_join' ? { postgres_changes: [] } : {} }]));
      if (event === 'phx_join') joined.add(ws);
    });
  });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const id = 'ffbec843-0245-4e6a-aa8f-367c56610bbc';
  const block = 'd9ab8ba6-2d8f-4f3e-9a55-7c3f0c1c1a2b';
  const user = 'c202ff0c-09a9-4626-8c11-1c550d3c7347';
  const at = '2026-12-07T12:26:50.882709+00:00';
  let seq = 0;
  /** A block_op delta as the gateway sends it (payload JSON.stringify'd once, text frame). */
  const frame = () => {
    seq++;
    const payload = {
      block: { type: 'text', content: { text: `edit ${seq} ${'lorem ipsum dolor sit amet '.repeat(4)}` }, version: seq, y_order: 'VI', block_id: block,
        canvas_id: id, parent_id: null, created_at: at, created_by: user, updated_at: at, updated_by: user },
      action: 'update', version: seq, actor_id: user, block_id: block, canvas_id: id, canvas_seq: seq, server_seq: seq, client_op_id: `rt-${seq}`,
    };
    return Buffer.from(`[null,null,"realtime:canvas:bench","broadcast",{"type":"broadcast","event":"block_op","payload":${JSON.stringify(payload)},"meta":{"id":"956434e4-667f-4bab-9f40-8975a99beb6b"}}]`);
  };
  const send = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const bytes = frame();
      for (const ws of joined) ws.send(bytes, { binary: false });
      await sleep(1000 / RATE);
    }
  };
  const results: Record<string, number[]> = { 'V8 default': [], [`${SEMI_SPACE} MB`]: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const semi of [0, SEMI_SPACE]) {
      const label = semi ? `${SEMI_SPACE} MB` : 'V8 default';
      const children = Array.from({ length: PROCESSES }, () => fork(fileURLToPath(import.meta.url), process.argv.slice(2), {
        env: { ...process.env, BENCH_CLIENT_HEAP_CHILD: '1' },
        execArgv: semi ? [...process.execArgv, `--max-semi-space-size=${semi}`] : process.execArgv,
      }));
      const ask = (m: ToChild) => Promise.all(children.map((child) => new Promise<FromChild>((resolve) => {
        child.once('message', (r: FromChild) => resolve(r));
        child.send(m);
      })));
      /** CPU (µs) and deliveries summed over the client processes. */
      const usage = async () => (await ask({ cmd: 'usage' }) as { cpuUs: number; received: number }[])
        .reduce((s, x) => ({ cpuUs: s.cpuUs + x.cpuUs, received: s.received + x.received }), { cpuUs: 0, received: 0 });
      await ask({ cmd: 'connect', url });
      await send(10); // warm-up
      await sleep(500);
      const a = await usage();
      await send(DELTAS);
      await sleep(1000);
      const b = await usage();
      const received = b.received - a.received;
      const us = (b.cpuUs - a.cpuUs) / received;
      results[label]!.push(us);
      console.log(`round ${round}, young generation ${label}: ${received} deliveries (expected ${DELTAS * CLIENTS * PROCESSES}), ${us.toFixed(2)} µs of CPU per delivery in the client process(es)`);
      for (const child of children) child.kill('SIGKILL');
      for (const ws of joined) ws.terminate();
      joined.clear();
      await sleep(500);
    }
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  console.log(Object.entries(results).map(([k, xs]) => `${k}: mean ${mean(xs).toFixed(2)} µs (${xs.map((x) => x.toFixed(2)).join(' / ')})`).join('; '));
  server.close();
  process.exit(0);
}

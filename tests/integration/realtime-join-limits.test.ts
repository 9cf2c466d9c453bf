import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { openPhoenix as openPhoenixSocket } from '../helpers/phoenix.ts';

// What one realtime-js socket may hold is bounded before the gateway keeps anything: phx_join
// frames per second (in bursts up to the channel cap), channels per socket, and the length of
// every name it keeps (topic, join_ref, ref, presence key). Before these bounds, one socket with the anon key joining public topics of ~1 MB each
// took a gateway from 120 MB to its heap limit in ~1,700 joins, and the process died. Raw Phoenix
// frames (vsn 1.0.0), as an attacker sends them; the limits are this server's, set small.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const limits = { maxChannelsPerSocket: 5, joinsPerSecond: 1 };

/** The project's anon key: role anon, no sub (as Supabase issues it). */
const anonKey = () => {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'supabase', ref: 'potentia-test', role: 'anon', iat, exp: iat + 3600 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(config.auth.jwtSecret));
};

const sockets: WebSocket[] = [];
async function openPhoenix() {
  const p = await openPhoenixSocket(server.url, await anonKey(), { sockets });
  return {
    ...p,
    join: (topic: string, ref: string) => p.send({ topic, event: 'phx_join', ref, join_ref: ref, payload: { config: { private: false } } }),
  };
}
const reasonOf = (payload: any) => (payload.status === 'ok' ? 'ok' : String(payload.response?.reason));

let server: Server;
beforeAll(async () => {
  server = await startServer(config, { realtime: { limits } });
}, 90_000);
afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.stop();
});

it('a burst of joins past the cap: as many channels as the cap, the rest refused with Supabase\'s reasons', async () => {
  const p = await openPhoenix();
  for (let i = 1; i <= 12; i++) p.join(`realtime:room-${i}`, String(i));
  const reasons = [];
  for (let i = 1; i <= 12; i++) reasons.push(reasonOf(await p.reply(String(i))));
  expect(reasons.slice(0, 5)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
  for (const r of reasons.slice(5)) expect(r).toMatch(/^(ClientJoinRateLimitReached: Too many joins per second \(at most 1\); retry in \d+ ms|ChannelRateLimitReached: Too many channels \(at most 5 per socket\): leave one first)$/);
  expect(reasons.slice(5)).toContainEqual(expect.stringMatching(/^ClientJoinRateLimitReached/));
});

it('the channel cap holds once joins are allowed again, and leaving one makes room', async () => {
  const p = await openPhoenix();
  for (let i = 1; i <= 5; i++) p.join(`realtime:cap-${i}`, String(i));
  for (let i = 1; i <= 5; i++) expect(reasonOf(await p.reply(String(i)))).toBe('ok');
  await new Promise((r) => setTimeout(r, 1100)); // one join's worth of rate
  p.join('realtime:cap-6', '6');
  expect(reasonOf(await p.reply('6'))).toBe('ChannelRateLimitReached: Too many channels (at most 5 per socket): leave one first');
  // a re-join of a channel it holds replaces it: no new channel
  await new Promise((r) => setTimeout(r, 1100));
  p.join('realtime:cap-5', '7');
  expect(reasonOf(await p.reply('7'))).toBe('ok');
  p.ws.send(JSON.stringify({ topic: 'realtime:cap-1', event: 'phx_leave', ref: '8', join_ref: '1', payload: {} }));
  expect(reasonOf(await p.reply('8'))).toBe('ok');
  await new Promise((r) => setTimeout(r, 1100));
  p.join('realtime:cap-6', '9');
  expect(reasonOf(await p.reply('9'))).toBe('ok');
});

it('a topic longer than 255 characters is refused (a 1 MB one too), and the socket goes on', async () => {
  const p = await openPhoenix();
  p.join(`realtime:${'x'.repeat(255 - 'realtime:'.length)}`, '1');
  expect(reasonOf(await p.reply('1'))).toBe('ok');
  await new Promise((r) => setTimeout(r, 1100));
  p.join(`realtime:${'x'.repeat(256 - 'realtime:'.length)}`, '2');
  expect(reasonOf(await p.reply('2'))).toBe('invalid_input: topic: at most 255 characters');
  await new Promise((r) => setTimeout(r, 1100));
  p.join(`realtime:${'y'.repeat(1_000_000)}`, '3');
  expect(reasonOf(await p.reply('3'))).toBe('invalid_input: topic: at most 255 characters');
  p.ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', ref: '4', join_ref: null, payload: {} }));
  expect(reasonOf(await p.reply('4'))).toBe('ok');
  expect(p.ws.readyState).toBe(WebSocket.OPEN);
});

it('every other name the gateway keeps is bounded too: join_ref, ref and the presence key (each kept per channel, pending reply or presence on every gateway)', async () => {
  const p = await openPhoenix();
  const long = 'r'.repeat(256);
  p.ws.send(JSON.stringify({ topic: 'realtime:names', event: 'phx_join', ref: '1', join_ref: long, payload: { config: {} } }));
  expect(reasonOf(await p.reply('1'))).toBe('invalid_input: join_ref: at most 255 characters');
  p.ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', ref: long, join_ref: null, payload: {} }));
  expect(reasonOf(await p.reply(long))).toBe('invalid_input: ref: at most 255 characters');
  p.ws.send(JSON.stringify({ topic: 'realtime:names', event: 'phx_join', ref: '2', join_ref: '2',
    payload: { config: { presence: { key: 'k'.repeat(500_000), enabled: true } } } }));
  expect(reasonOf(await p.reply('2'))).toBe('invalid_input: config.presence.key: at most 255 characters');
  await new Promise((r) => setTimeout(r, 1100));
  p.ws.send(JSON.stringify({ topic: 'realtime:names', event: 'phx_join', ref: '3', join_ref: '3',
    payload: { config: { presence: { key: 'k'.repeat(255), enabled: true } } } }));
  expect(reasonOf(await p.reply('3'))).toBe('ok');
});

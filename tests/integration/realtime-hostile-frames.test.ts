import { SignJWT } from 'jose';
import { pino } from 'pino';
import net from 'node:net';
import { Writable } from 'node:stream';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { openPhoenix as openPhoenixSocket, type Phoenix } from '../helpers/phoenix.ts';
import { until } from '../helpers/wait.ts';

// Phoenix frames whose names are hostile, as an attacker sends them (raw frames, the anon key):
// presence keys that are names of Object.prototype's members, and refs that are not strings. The
// gateway answers each with a phx_reply (refused, naming the field, or served as any other), and
// logs no error.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };

/** The project's anon key: role anon, no sub (as Supabase issues it). */
const anonKey = () => {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'supabase', ref: 'potentia-test', role: 'anon', iat, exp: iat + 3600 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(config.auth.jwtSecret));
};

/** Every line the server logs at error level or above. */
const errors: any[] = [];
const logger = pino({ level: 'error' }, new Writable({
  write(chunk, _enc, done) {
    for (const line of String(chunk).split('\n').filter(Boolean)) errors.push(JSON.parse(line));
    done();
  },
}));

const sockets: WebSocket[] = [];
const openPhoenix = async (vsn: '1.0.0' | '2.0.0' = '1.0.0') => openPhoenixSocket(server.url, await anonKey(), { vsn, sockets });
const replyTo = (p: Phoenix, ref: string) => p.reply(ref);
const join = (p: Phoenix, topic: string, ref: string, presenceKey: string) =>
  p.send({ topic, event: 'phx_join', ref, join_ref: ref, payload: { config: { presence: { key: presenceKey, enabled: true } } } });
const track = (p: Phoenix, topic: string, joinRef: string, ref: string, meta: Record<string, unknown>) =>
  p.send({ topic, event: 'presence', ref, join_ref: joinRef, payload: { type: 'presence', event: 'track', payload: meta } });

let server: Server;
beforeAll(async () => {
  server = await startServer(config, { logger });
}, 90_000);
afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.stop();
});

describe('presence keys', () => {
  it.each(['constructor', 'toString', 'hasOwnProperty'])('%s is a presence key like any other: tracked, in what the next joiner is sent of the room, one join reply', async (key) => {
    const topic = `realtime:presence-${key}`;
    const a = await openPhoenix();
    join(a, topic, '1', key);
    expect((await replyTo(a, '1')).status).toBe('ok');
    track(a, topic, '1', '2', { cursor: { x: 1 } });
    expect(await replyTo(a, '2')).toEqual({ status: 'ok', response: {} });
    await until(() => a.frames.some((f) => f.event === 'presence_diff'), 5000, 'the presence_diff of the track');
    // one diff, the join only (no leave of a previous meta split off from it)
    expect(a.frames.filter((f) => f.event === 'presence_diff').map((f) => f.payload))
      .toEqual([{ joins: { [key]: { metas: [{ cursor: { x: 1 }, phx_ref: expect.any(String) }] } }, leaves: {} }]);

    const b = await openPhoenix();
    join(b, topic, '1', 'bob');
    await until(() => b.frames.some((f) => f.event === 'presence_state'), 5000, 'presence_state');
    expect(b.frames.filter((f) => f.event === 'phx_reply').map((f) => f.payload)).toEqual([{ status: 'ok', response: { postgres_changes: [] } }]);
    // the room's presence comes as the diff before an empty presence_state (phoenix-socket.ts join)
    expect(b.frames.filter((f) => f.event === 'presence_diff' || f.event === 'presence_state').map((f) => [f.event, f.payload])).toEqual([
      ['presence_diff', { joins: { [key]: { metas: [{ cursor: { x: 1 }, phx_ref: expect.any(String) }] } }, leaves: {} }],
      ['presence_state', {}],
    ]);
    expect(errors).toEqual([]);
  });

  it('__proto__ is refused on the field, as the input policy refuses that object key', async () => {
    const p = await openPhoenix();
    join(p, 'realtime:presence-proto', '1', '__proto__');
    expect(await replyTo(p, '1')).toEqual({ status: 'error', response: {
      reason: 'invalid_input: config.presence.key: __proto__ is not accepted (JavaScript would treat it as the prototype): use another key' } });
    // and the socket carries on
    p.send({ topic: 'phoenix', event: 'heartbeat', ref: '2', payload: {} });
    expect((await replyTo(p, '2')).status).toBe('ok');
  });
});

describe('config.private', () => {
  it.each(['"true"', '1', '"yes"'])('%s (not a boolean) is refused on the field, not read as a public join', async (value) => {
    const p = await openPhoenix();
    p.send({ topic: 'realtime:private-kind', event: 'phx_join', ref: '1', join_ref: '1', payload: { config: { private: JSON.parse(value) } } });
    expect(await replyTo(p, '1')).toEqual({ status: 'error', response: { reason: 'invalid_input: config.private: true or false (a boolean)' } });
    p.send({ topic: 'phoenix', event: 'heartbeat', ref: '2', payload: {} });
    expect((await replyTo(p, '2')).status).toBe('ok');
  });
});

describe('the Host of a WebSocket upgrade', () => {
  it('none (HTTP/1.1), two, or one that is not a host[:port] is a 400 naming host, never a WebSocket (as every HTTP request)', async () => {
    const port = Number(new URL(server.url).port);
    const upgrade = (hostLines: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (c) => chunks.push(c));
      socket.on('error', reject);
      socket.on('close', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: Number(text.slice(9, 12)), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
      });
      void anonKey().then((key) => socket.write(`GET /realtime/v1/websocket?apikey=${key}&vsn=1.0.0 HTTP/1.1\r\n${hostLines}`
        + 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'));
      setTimeout(() => socket.destroy(), 3000); // an upgraded socket stays open: the test reads its status line
    });
    for (const hostLines of ['', 'Host: a\r\nHost: b\r\n', 'Host: a b\r\n', 'Host: user@evil.example\r\n', 'Host: x/y\r\n']) {
      const res = await upgrade(hostLines);
      expect({ hostLines, status: res.status }).toEqual({ hostLines, status: 400 });
      expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'invalid_input', field: 'host', message: expect.stringMatching(/^host: /) } });
    }
    expect((await upgrade('Host: localhost\r\n')).status).toBe(101);
  });
});

describe.each(['1.0.0', '2.0.0'] as const)('phx_join payloads and events of the wrong type (vsn %s)', (vsn) => {
  const send = (p: Phoenix, ref: string, topic: string, event: unknown, payload: unknown) =>
    (vsn === '2.0.0' ? p.sendText(JSON.stringify([ref, ref, topic, event, payload])) : p.send({ topic, event, ref, join_ref: ref, payload }));
  // each was joined as if the part were absent: a config "x" as no config, a presence key 7 as a
  // random key, an access_token 5 on the connect token; an event 1 was not answered at all
  const cases: [unknown, string][] = [
    ['a string', 'payload: a JSON object ({config, access_token})'],
    [[1], 'payload: a JSON object ({config, access_token})'],
    [{ config: 'x' }, 'config: a JSON object'],
    [{ config: [] }, 'config: a JSON object'],
    [{ config: { broadcast: 'x' } }, 'config.broadcast: a JSON object'],
    [{ config: { presence: [] } }, 'config.presence: a JSON object'],
    [{ config: { broadcast: { self: 'true' } } }, 'config.broadcast.self: true or false (a boolean)'],
    [{ config: { broadcast: { ack: 1 } } }, 'config.broadcast.ack: true or false (a boolean)'],
    [{ config: { presence: { key: 7 } } }, 'config.presence.key: a string'],
    [{ config: { presence: { enabled: 'yes' } } }, 'config.presence.enabled: true or false (a boolean)'],
    [{ config: { postgres_changes: {} } }, 'config.postgres_changes: an array'],
    [{ access_token: 5 }, 'access_token: a string (a JWT)'],
    [{ access_token: { jwt: 'x' } }, 'access_token: a string (a JWT)'],
  ];

  it('a join whose payload, config or access_token has the wrong type is refused naming the field; realtime-js\'s own join is served', async () => {
    const p = await openPhoenix(vsn);
    let ref = 0;
    for (const [payload, reason] of cases) {
      const r = String(++ref);
      send(p, r, `realtime:join-types-${r}`, 'phx_join', payload);
      expect(await replyTo(p, r), JSON.stringify(payload)).toEqual({ status: 'error', response: { reason: `invalid_input: ${reason}` } });
      await new Promise((resolve) => setTimeout(resolve, 60)); // under the joins per second
    }
    // what realtime-js sends by default, nulls too
    send(p, 'ok', 'realtime:join-types-ok', 'phx_join', { config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false },
      private: false, postgres_changes: [] }, access_token: null });
    expect((await replyTo(p, 'ok')).status).toBe('ok');
    send(p, 'ok2', 'realtime:join-types-ok2', 'phx_join', null);
    expect((await replyTo(p, 'ok2')).status).toBe('ok');
    expect(errors).toEqual([]);
  });

  it('an event that is not a string is answered on its topic with its ref (it was never answered)', async () => {
    const p = await openPhoenix(vsn);
    for (const [ref, event] of [['1', 1], ['2', null], ['3', { e: 'phx_join' }]] as const) {
      send(p, ref, 'realtime:event-types', event, {});
      expect(await replyTo(p, ref)).toEqual({ status: 'error', response: { reason: "invalid_input: event: a string (the event's name)" } });
    }
    // a topic that is not a string cannot be answered on a channel: ignored, as Phoenix does; the socket serves on
    send(p, '4', 1 as never, 'phx_join', {});
    send(p, '5', 'phoenix', 'heartbeat', {});
    expect((await replyTo(p, '5')).status).toBe('ok');
    expect(p.frames.filter((f) => f.ref === '4')).toEqual([]);
  });
});

describe.each(['1.0.0', '2.0.0'] as const)('access_token frames of the wrong type (vsn %s)', (vsn) => {
  const send = (p: Phoenix, joinRef: string, ref: string | null, topic: string, event: string, payload: unknown) =>
    (vsn === '2.0.0' ? p.sendText(JSON.stringify([joinRef, ref, topic, event, payload])) : p.send({ topic, event, ref, join_ref: joinRef, payload }));

  it('a token that is not a string, or a payload that is not an object, is refused naming the field (it went unanswered); the channel keeps its token', async () => {
    const p = await openPhoenix(vsn);
    const topic = 'realtime:access-token-types';
    send(p, 'j', 'j', topic, 'phx_join', { config: { broadcast: { ack: true } } });
    expect((await replyTo(p, 'j')).status).toBe('ok');
    const cases: [unknown, string][] = [
      [{ access_token: 5 }, 'payload.access_token: a string (a JWT), or null'],
      [{ access_token: { jwt: 'x' } }, 'payload.access_token: a string (a JWT), or null'],
      [{ access_token: ['x'] }, 'payload.access_token: a string (a JWT), or null'],
      [{ access_token: true }, 'payload.access_token: a string (a JWT), or null'],
      ['a string', 'payload: a JSON object ({access_token})'],
      [[1], 'payload: a JSON object ({access_token})'],
    ];
    let ref = 0;
    for (const [payload, reason] of cases) {
      const r = String(++ref);
      send(p, 'j', r, topic, 'access_token', payload);
      expect(await replyTo(p, r), JSON.stringify(payload)).toEqual({ status: 'error', response: { reason: `invalid_input: ${reason}` } });
    }
    // without a ref (realtime-js pushes access_token without awaiting a reply... with one here): a system error on the channel
    send(p, 'j', null, topic, 'access_token', { access_token: 5 });
    await until(() => p.frames.some((f) => f.event === 'system'), 5000, 'the system error');
    expect(p.frames.filter((f) => f.event === 'system').map((f) => f.payload)).toEqual([
      { extension: 'system', status: 'error', message: 'invalid_input: payload.access_token: a string (a JWT), or null', channel: 'access-token-types' }]);
    // null (realtime-js's setAuth(null) on sign-out) and "" are no new token, as on Supabase Realtime: nothing happens
    send(p, 'j', 'null', topic, 'access_token', { access_token: null });
    // the channel is still joined, on its token
    send(p, 'j', 'b', topic, 'broadcast', { type: 'broadcast', event: 'e', payload: {} });
    expect(await replyTo(p, 'b')).toEqual({ status: 'ok', response: {} });
    expect(p.frames.filter((f) => f.ref === 'null')).toEqual([]);
    expect(p.frames.filter((f) => f.event === 'phx_close')).toEqual([]);
    expect(errors).toEqual([]);
  });
});

describe.each(['1.0.0', '2.0.0'] as const)('refs (vsn %s)', (vsn) => {
  const frame = (joinRef: string, ref: string) => (vsn === '2.0.0'
    ? `[${joinRef}, ${ref}, "phoenix", "heartbeat", {}]`
    : `{"join_ref": ${joinRef}, "ref": ${ref}, "topic": "phoenix", "event": "heartbeat", "payload": {}}`);
  const refused = (field: string) => ({ join_ref: null, ref: null, topic: 'phoenix', event: 'phx_reply',
    payload: { status: 'error', response: { reason: `invalid_input: ${field}: a ref is a string, a number or null` } } });

  it('a ref that is an object, an array (100,000 deep too) or a number beyond a double is answered refused, naming it', async () => {
    const p = await openPhoenix(vsn);
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const bad: [string, string, string][] = [
      ['null', '{"a": 1}', 'ref'], ['null', '[1, 2]', 'ref'], ['null', deep, 'ref'], ['null', '1e400', 'ref'], ['{}', '"5"', 'join_ref'],
    ];
    for (const [joinRef, ref] of bad) p.sendText(frame(joinRef, ref));
    p.sendText(frame('null', '"after"'));
    await replyTo(p, 'after');
    const replies = p.frames.filter((f) => f.event === 'phx_reply');
    expect(replies).toEqual([...bad.map(([, , field]) => refused(field)),
      { join_ref: null, ref: 'after', topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} } }]);
    expect(errors).toEqual([]);
  });

  it('a ref with a NUL or an unpaired surrogate is refused by the input policy; a number is its text', async () => {
    const p = await openPhoenix(vsn);
    p.sendText(frame('null', '"a\\u0000b"'));
    p.sendText(frame('null', '"\\ud800"'));
    p.sendText(frame('null', '7'));
    await replyTo(p, '7');
    expect(p.frames.map((f) => f.payload)).toEqual([
      { status: 'error', response: { reason: 'invalid_input: ref: contains a NUL character' } },
      { status: 'error', response: { reason: 'invalid_input: ref: contains an unpaired UTF-16 surrogate (not a Unicode character)' } },
      { status: 'ok', response: {} },
    ]);
  });
});

describe('vsn 2.0.0 binary broadcast pushes (kind 3) that name their topic and ref', () => {
  /** A kind 3 frame: [3, joinRefLen, refLen, topicLen, eventLen, metaLen, encoding, joinRef, ref, topic, event, meta, payload]. */
  const push = (ref: string, parts: { event?: Buffer; meta?: string; encoding?: number; body: Buffer | string }) => {
    const head = [Buffer.from('j'), Buffer.from(ref), Buffer.from('realtime:binary-push'), parts.event ?? Buffer.from('note'), Buffer.from(parts.meta ?? '')];
    return Buffer.concat([Buffer.from([3, ...head.map((b) => b.length), parts.encoding ?? 1]), ...head, Buffer.from(parts.body)]);
  };

  it('are answered refused on their ref, naming the part that is wrong (they went unanswered); the socket serves on', async () => {
    const p = await openPhoenix('2.0.0');
    p.sendText(JSON.stringify(['j', 'j', 'realtime:binary-push', 'phx_join', { config: { broadcast: { ack: true } } }]));
    expect((await replyTo(p, 'j')).status).toBe('ok');
    const cases: [Buffer, string][] = [
      [push('1', { encoding: 2, body: '{}' }), 'payload.payload: an encoding of 0 (binary) or 1 (JSON), not 2'],
      [push('2', { body: '{"a":' }), 'payload.payload: malformed JSON'],
      [push('3', { body: Buffer.from([0x7b, 0xc3, 0x28, 0x7d]) }), 'payload.payload: not valid UTF-8'],
      [push('4', { meta: '{"a":', body: '{}' }), 'meta: malformed JSON'],
      [push('5', { meta: '"abc"', body: '{}' }), 'meta: a JSON object'],
      [push('6', { event: Buffer.from([0xff, 0xfe]), body: '{}' }), 'event: not valid UTF-8'],
    ];
    for (const [i, [frame, reason]] of cases.entries()) {
      p.ws.send(frame, { binary: true });
      expect(await replyTo(p, String(i + 1)), reason).toEqual({ status: 'error', response: { reason: `invalid_input: ${reason}` } });
    }
    // a well-formed one on the same socket is relayed and acknowledged
    p.ws.send(push('7', { body: '{"t":"fine"}' }), { binary: true });
    expect(await replyTo(p, '7')).toEqual({ status: 'ok', response: {} });
    expect(errors).toEqual([]);
  });
});

describe('frames of the other shape, or of the wrong length, that name their topic and ref', () => {
  it('are answered refused on that topic and ref, saying the shape (they went unanswered); a broadcast without an event names payload.event', async () => {
    const v2 = await openPhoenix('2.0.0');
    const topic = 'realtime:frame-shapes';
    v2.sendText(JSON.stringify(['j', 'j', topic, 'phx_join', { config: { broadcast: { ack: true } } }]));
    expect((await replyTo(v2, 'j')).status).toBe('ok');
    const arrays = 'invalid_input: frame: a JSON array [join_ref, ref, topic, event, payload] (vsn 2.0.0)';
    v2.sendText(JSON.stringify(['j', '1', topic, 'broadcast']));
    expect(await replyTo(v2, '1')).toEqual({ status: 'error', response: { reason: arrays } });
    v2.sendText(JSON.stringify(['j', '2', topic, 'broadcast', { type: 'broadcast', event: 'e', payload: {} }, 'extra']));
    expect(await replyTo(v2, '2')).toEqual({ status: 'error', response: { reason: arrays } });
    v2.sendText(JSON.stringify({ join_ref: 'j', ref: '3', topic, event: 'broadcast', payload: { type: 'broadcast', event: 'e', payload: {} } }));
    expect(await replyTo(v2, '3')).toEqual({ status: 'error', response: { reason: arrays } });
    v2.sendText(JSON.stringify(['j', '4', topic, 'broadcast', { type: 'broadcast', payload: {} }]));
    expect(await replyTo(v2, '4')).toEqual({ status: 'error', response: { reason: "invalid_input: payload.event: a string (the broadcast's event name)" } });

    const v1 = await openPhoenix('1.0.0');
    v1.sendText(JSON.stringify(['j', '5', 'phoenix', 'heartbeat', {}]));
    expect(await replyTo(v1, '5')).toEqual({ status: 'error', response: { reason: 'invalid_input: frame: a JSON object {join_ref, ref, topic, event, payload} (vsn 1.0.0)' } });
    // nothing to answer on (no topic, or a ref that is none): ignored, as Phoenix does; the sockets serve on
    v2.sendText(JSON.stringify([1, 2]));
    v2.sendText(JSON.stringify(['j', '6', topic, 'broadcast', { type: 'broadcast', event: 'e', payload: {} }]));
    expect(await replyTo(v2, '6')).toEqual({ status: 'ok', response: {} });
    expect(errors).toEqual([]);
  });
});

describe('a broadcast without an event on a channel without ack', () => {
  it('is refused with a system error on the channel naming payload.event (it was dropped without a word)', async () => {
    const p = await openPhoenix('1.0.0');
    const topic = 'realtime:no-ack-event';
    p.send({ topic, event: 'phx_join', ref: 'j', join_ref: 'j', payload: { config: { broadcast: { ack: false } } } });
    expect((await replyTo(p, 'j')).status).toBe('ok');
    p.send({ topic, event: 'broadcast', ref: '1', join_ref: 'j', payload: 'x' });
    await until(() => p.frames.some((f) => f.event === 'system'), 5000, 'the system error');
    expect(p.frames.filter((f) => f.event === 'system').map((f) => f.payload)).toEqual([
      { extension: 'system', status: 'error', message: "invalid_input: payload.event: a string (the broadcast's event name)", channel: 'no-ack-event' }]);
    expect(errors).toEqual([]);
  });
});

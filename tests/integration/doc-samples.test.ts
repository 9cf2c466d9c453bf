// The TypeScript samples of docs/realtime.md, docs/merge.md and docs/supabase.md (section 3), run
// as written, each pasted into a script of its own and run with `node --import tsx` as a reader
// runs it, against a real `src/main.ts` process started as `npm start` starts it (development
// profile), with a user who signed up through the local /auth/v1. The script gives each sample the
// names it leaves to the reader (url, anonKey, canvasId, apply, render, …) before it, and after it
// waits for what the doc says happens and prints it. The answers are checked against the doc's
// own JSON where it shows one (the block_op event, the changes page, the 409 conflict), so a doc
// whose sample no longer runs, or whose shapes drift from the server's, fails here.
// (Before this test, docs/merge.md's CanvasSync sample used CanvasSync and WebSocket without
// importing them: pasted into a Node 20 script it threw `CanvasSync is not defined`.)
// docs/embeddings.md: its SQL (queue every block after a change of provider) runs as written in
// psql, and a search answers the fields its JSON shows. README.md's Sign-in samples (createClient, then
// functions.invoke of a mutation) run as written, with the URL of this test's server; docs/mutations.md's
// two batch refusals are the bodies the server sends. docs/realtime.md's Paged snapshots sample, given only
// url, accessToken and canvasId, joins the pages and the changes of a two-page canvas written to between
// page reads into the canvas the database holds (before, it used `get` and `id` defined nowhere: `get is not defined`).
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { bigCanvas } from '../helpers/big-canvas.ts';
import { callAs } from '../helpers/fixtures.ts';

const root = new URL('../..', import.meta.url).pathname;
// inside the repository (gitignored), so the scripts' imports resolve from its node_modules and
// its package.json makes them ES modules (top-level await), as quickstart.ts at the root would
const scratch = join(root, 'test-results', 'doc-samples');

let server: DevServer;
let anonKey: string;
const email = `doc-samples-${randomUUID()}@example.com`;
const password = 'correct horse battery';
let accessToken: string;
let canvasId: string;
// a canvas of its own for the events test (it renames the canvas)
let eventsCanvasId: string;

beforeAll(async () => {
  mkdirSync(scratch, { recursive: true });
  server = await startDevServer();
  anonKey = server.anonKey;
  const signup = await fetch(`${server.url}/auth/v1/signup`, {
    method: 'POST', headers: { apikey: anonKey, 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
  });
  expect(signup.status).toBe(200);
  accessToken = (await signup.json()).access_token;
  const workspace = await api('POST', '/api/v1/workspaces', { name: 'Doc samples' });
  canvasId = (await api('POST', '/api/v1/canvas', { workspace_id: workspace.body.workspace_id, title: 'Doc samples' })).body.canvas_id;
  eventsCanvasId = (await api('POST', '/api/v1/canvas', { workspace_id: workspace.body.workspace_id, title: 'Events' })).body.canvas_id;
}, 90_000);
const db = testDatabase();
afterAll(async () => { await server?.stop(); await db.close(); });

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.url}${path}`, {
    method, headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const mutate = (op: Record<string, unknown>) => api('POST', `/api/v1/canvas/${canvasId}/mutate`, { client_op_id: randomUUID(), ...op });

/** The `n`th (0-based) block of `lang` after `marker` in a doc. */
function blockAfter(file: string, marker: string, lang: string, n = 0): string {
  const doc = readFileSync(join(root, file), 'utf8');
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`${file} no longer has "${marker}"`);
  const blocks = [...doc.slice(at).matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))];
  if (!blocks[n]) throw new Error(`no ${lang} block ${n} after "${marker}" in ${file}`);
  return blocks[n]![1]!;
}

/**
 * Runs `before` + the sample + `after` as one script; resolves what the script printed on its
 * last line that starts with `RESULT `, parsed. `after` ends with `done(value)`.
 */
async function runSample(name: string, before: string, sample: string, after: string): Promise<any> {
  const file = join(scratch, `${name}.ts`);
  const done = 'const done = (v: unknown) => { console.log("RESULT " + JSON.stringify(v)); process.exit(0); };\n'
    + 'setTimeout(() => { console.error("timed out"); process.exit(3); }, 20_000);\n';
  writeFileSync(file, `${done}${before}\n// ---- the doc's sample, as written ----\n${sample}// ---- end ----\n${after}\n`);
  const env = { ...process.env, URL: server.url, ANON_KEY: anonKey, EMAIL: email, PASSWORD: password, CANVAS_ID: canvasId, TOKEN: accessToken };
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', file], { cwd: root, env, timeout: 40_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
  const line = stdout.split('\n').filter((l) => l.startsWith('RESULT ')).pop();
  if (code !== 0 || !line) throw new Error(`${name} (${file}) exited ${code}:\n${stdout}\n${stderr}`);
  return JSON.parse(line.slice('RESULT '.length));
}

/** A signed-in supabase-js client named `supabase`, for the samples that start from one. */
const signedIn = `
import { createClient as makeClient } from '@supabase/supabase-js';
import WebSocketForNode20 from 'ws';
const url = process.env.URL!, anonKey = process.env.ANON_KEY!, canvasId = process.env.CANVAS_ID!;
const supabase = makeClient(url, anonKey, { realtime: { transport: WebSocketForNode20 as never } });
{ const { error } = await supabase.auth.signInWithPassword({ email: process.env.EMAIL!, password: process.env.PASSWORD! }); if (error) throw error; }
const until = async (ok: () => boolean) => { while (!ok()) await new Promise((r) => setTimeout(r, 20)); };
const mutate = async (op: Record<string, unknown>) => {
  const { data, error } = await supabase.functions.invoke(\`canvas/\${canvasId}/mutate\`, { body: { client_op_id: crypto.randomUUID(), ...op } });
  if (error) throw new Error(await error.context.text());
  return data;
};
`;

/** The keys of a doc's JSON example, and of its objects one level down. */
function docJson(file: string, marker: string): any {
  return JSON.parse(blockAfter(file, marker, 'json'));
}

describe('docs/embeddings.md as written', () => {
  it('the SQL that queues every block runs in psql and queues this canvas\'s blocks; a search answers the fields the doc\'s JSON shows', async () => {
    const created = await mutate({ action: 'create', patch: { type: 'text', content: { text: 'my cats sleep' } } });
    expect(created.status).toBe(200);
    const sql = blockAfter('docs/embeddings.md', 'after switching providers queue every block once', 'sql');
    // in a transaction rolled back after the count: the files after this one share the database,
    // and a worker of theirs would embed every block it queued
    const queued = execFileSync('psql', [testDatabaseUrl(), '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1'], {
      input: `begin;\n${sql}select count(*) from app.embedding_outbox where block_id = '${created.body.block_id}';\nrollback;\n`,
    }).toString().trim();
    expect(queued).toBe('1');

    const shown = docJson('docs/embeddings.md', '## Search compares one model');
    const search = await api('GET', `/api/v1/canvas/${canvasId}/search?q=cats`);
    expect(search.status).toBe(200);
    expect(Object.keys(search.body).sort()).toEqual(Object.keys(shown).sort());
    // nothing embedded here (no worker): "items: [], other_model_blocks: 0 — no match"
    expect(search.body).toEqual({ items: [], model: 'local-hash-v1', other_model_blocks: 0, other_models: [] });
  });
});

describe('docs/mutations.md, Batches: the two 400 bodies are the ones the server sends', () => {
  it('a batch refused by the shape check, then by the database, each naming op 1 by failed_index and its field', async () => {
    const shown = blockAfter('docs/mutations.md', '## Batches', 'json').trim().split('\n').map((l) => JSON.parse(l));
    expect(shown).toHaveLength(2);
    const created = await mutate({ action: 'create', patch: { type: 'text', content: { t: 'abc' } } });
    const blockId = created.body.block_id;
    const batch = (second: Record<string, unknown>) => api('POST', `/api/v1/canvas/${canvasId}/mutate`, {
      ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }, { client_op_id: randomUUID(), block_id: blockId, ...second }],
    });
    const answers = [
      await batch({ action: 'update', base_version: 0, patch: { content: { a: 1 } } }),
      await batch({ action: 'update', base_version: 1, patch: { text: { t: [{ d: 10 }] } } }),
    ];
    answers.forEach((answer, i) => {
      expect(answer.status).toBe(400);
      const { message, ...rest } = shown[i].error;
      // the doc's message up to its "…", as the server words it (the second's said "patch.text.t: …")
      expect(answer.body.error).toEqual({ ...rest, message: expect.stringMatching(new RegExp(`^${message.split('…')[0].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.`)) });
    });
    // nothing of either batch applied: the block is as created
    expect((await api('GET', `/api/v1/canvas/${canvasId}/blocks/${blockId}`)).body).toMatchObject({ version: 1, content: { t: 'abc' } });
  });
});

describe('README.md, "What runs where": the Sign-in samples run as written', () => {
  it('createClient as written signs in through /auth/v1, and functions.invoke as written creates the block; a refusal is read with error.context.json()', async () => {
    const client = blockAfter('README.md', '**Sign-in** (local only', 'ts');
    const invoke = blockAfter('README.md', '**Sign-in** (local only', 'ts', 1);
    // the one change a reader makes: the URL npm start printed (this server's port is its own)
    expect(client).toContain("'http://127.0.0.1:54321'");
    const got = await runSample('readme-sign-in', `
const anonKey = process.env.ANON_KEY!, canvasId = process.env.CANVAS_ID!;`, client.replace("'http://127.0.0.1:54321'", 'process.env.URL!') + `
{ const { error } = await supabase.auth.signInWithPassword({ email: process.env.EMAIL!, password: process.env.PASSWORD! }); if (error) throw error; }
` + invoke, `
// the comment's claim: a refusal's answer is await error.context.json()
const refused = await supabase.functions.invoke(\`canvas/\${canvasId}/mutate\`, { body: { action: 'create', client_op_id: crypto.randomUUID(), patch: {} } });
done({ data, error, refusedMessage: refused.error?.message, refused: await refused.error?.context.json() });`);
    expect(got.error).toBeNull();
    expect(got.data).toMatchObject({ status: 'success', canvas_seq: expect.any(Number), block: { type: 'text', content: { text: 'Hello' }, canvas_id: canvasId } });
    expect(got.refusedMessage).toBe('Edge Function returned a non-2xx status code');
    expect(got.refused).toEqual({ error: { code: 'invalid_input', message: expect.any(String), field: 'patch.type' } });
  });
});

describe('docs/realtime.md, docs/merge.md and docs/supabase.md: the TypeScript samples run as written', () => {
  it('realtime.md, realtime-js: a private canvas channel gets block_op in the shape the Events section shows', async () => {
    const sample = blockAfter('docs/realtime.md', '**realtime-js** is the Supabase way', 'ts');
    const got = await runSample('realtime-subscribe', `
const url = process.env.URL!, anonKey = process.env.ANON_KEY!, email = process.env.EMAIL!, password = process.env.PASSWORD!, canvasId = process.env.CANVAS_ID!;
const received: unknown[] = [];
const apply = (payload: unknown) => { received.push(payload); };
const leave = () => {};`, sample, `
while (channel.state !== 'joined') await new Promise((r) => setTimeout(r, 20));
const { error } = await supabase.functions.invoke(\`canvas/\${canvasId}/mutate\`, {
  body: { action: 'create', client_op_id: crypto.randomUUID(), patch: { type: 'text', content: { text: 'hello' } } },
});
if (error) throw error;
while (received.length === 0) await new Promise((r) => setTimeout(r, 20));
done(received[0]);`);
    const shown = docJson('docs/realtime.md', '### `block_op`');
    expect(got).toMatchObject({ action: 'create', canvas_id: canvasId, version: 1, block: { content: { text: 'hello' } } });
    expect(Object.keys(got).sort()).toEqual(Object.keys(shown).sort());
    expect(Object.keys(got.block).sort()).toEqual(Object.keys(shown.block).sort());
  });

  it('realtime.md, Events: presence, canvas_updated, presence_leave and canvas_deleted arrive with the fields the doc shows', async () => {
    const supabase = createClient(server.url, anonKey, { realtime: { transport: WebSocket as never }, auth: { persistSession: false } });
    expect((await supabase.auth.signInWithPassword({ email, password })).error).toBeNull();
    const id = eventsCanvasId;
    const got: Record<string, any> = {};
    const channel = supabase.channel(`canvas:${id}`, { config: { private: true } });
    for (const event of ['presence', 'presence_leave', 'canvas_updated', 'canvas_deleted']) {
      channel.on('broadcast', { event }, ({ payload }) => { got[event] = payload; });
    }
    await new Promise((resolve, reject) => channel.subscribe((s, err) => (s === 'SUBSCRIBED' ? resolve(s) : s !== 'CLOSED' && reject(err ?? new Error(s)))));
    expect((await api('POST', `/api/v1/canvas/${id}/presence`, { cursor: { x: 1, y: 2 }, typing: false })).status).toBe(200);
    expect((await api('PATCH', `/api/v1/canvas/${id}`, { title: 'Roadmap' })).status).toBe(200);
    expect((await api('POST', `/api/v1/canvas/${id}/leave`, {})).status).toBe(200);
    while (!got.presence_leave) await new Promise((r) => setTimeout(r, 20));
    // "It reaches open channels before the live re-check closes them", on the stream or, while the
    // gateway polls realtime.messages (its slot not streaming yet), from a polled batch
    // (tests/integration/realtime-deleted-while-polling.test.ts)
    expect((await api('DELETE', `/api/v1/canvas/${id}`)).status).toBe(204);
    while (!got.canvas_deleted) await new Promise((r) => setTimeout(r, 20));
    await supabase.removeAllChannels();
    // presence_leave's block shows two payloads, one a line
    const shown = (heading: string) => {
      const block = blockAfter('docs/realtime.md', heading, 'json');
      try { return JSON.parse(block); } catch { return JSON.parse(block.split('\n')[0]!); }
    };
    const keys = (v: object) => Object.keys(v).sort();
    expect(keys(got.presence)).toEqual(keys(shown('### `presence`')));
    expect(got.presence).toMatchObject({ cursor: { x: 1, y: 2 }, typing: false });
    expect(keys(got.presence_leave)).toEqual(keys(shown('### `presence_leave`')));
    expect(keys(got.canvas_updated.canvas)).toEqual(keys(shown('### `canvas_updated`').canvas));
    expect(got.canvas_updated.canvas).toMatchObject({ canvas_id: id, title: 'Roadmap' });
    expect(got.canvas_deleted).toEqual({ canvas_id: id });
    expect(keys(got.canvas_deleted)).toEqual(keys(shown('### `canvas_deleted`')));
  });

  it('realtime.md, Presence: track() is recorded, and presenceState() shows it under the key with its presence_ref', async () => {
    const sample = blockAfter('docs/realtime.md', '## Presence (realtime-js)', 'ts');
    const got = await runSample('realtime-presence', `${signedIn}
const userId = (await supabase.auth.getUser()).data.user!.id;
let state: Record<string, unknown[]> = {};
const render = (s: Record<string, unknown[]>) => { state = s; };
const removeCursor = (_key: string) => {};
const name = 'Ada', x = 10, y = 20;`, sample, `
await until(() => (state[userId]?.length ?? 0) > 0);
done({ userId, state });`);
    expect(got.state).toEqual({ [got.userId]: [{ name: 'Ada', cursor: { x: 10, y: 20 }, presence_ref: expect.any(String) }] });
  });

  it('realtime.md, Client broadcasts: the send reaches another client of the room', async () => {
    const sample = blockAfter('docs/realtime.md', '## Client broadcasts', 'ts');
    const got = await runSample('realtime-broadcast', `${signedIn}
// another client of the same room, subscribed before the sample runs
const other = makeClient(url, anonKey, { realtime: { transport: WebSocketForNode20 as never } });
{ const { error } = await other.auth.signInWithPassword({ email: process.env.EMAIL!, password: process.env.PASSWORD! }); if (error) throw error; }
const seen: unknown[] = [];
const watcher = other.channel(\`canvas:\${canvasId}\`, { config: { private: true } }).on('broadcast', { event: 'cursor' }, ({ payload }) => { seen.push(payload); });
await new Promise((resolve, reject) => watcher.subscribe((s, err) => s === 'SUBSCRIBED' ? resolve(s) : s !== 'CLOSED' && reject(err ?? new Error(s))));
const x = 3, y = 4;`, sample, `
await until(() => seen.length > 0);
done(seen);`);
    expect(got).toEqual([{ x: 3, y: 4 }]);
  });

  it('realtime.md, Broadcast replay: a block_op committed before the join is replayed with meta.replayed', async () => {
    const sample = blockAfter('docs/realtime.md', '## Broadcast replay', 'ts');
    const got = await runSample('realtime-replay', `${signedIn}
const lastReceivedAt = Date.now() - 1000;
const created = await mutate({ action: 'create', patch: { type: 'text', content: { text: 'missed' } } });
const seen = new Set<string>();
const applied: any[] = [];
const apply = (payload: any) => { applied.push(payload); };`, sample, `
const metas: any[] = [];
channel.on('broadcast', { event: 'block_op' }, ({ meta }) => { metas.push(meta); });
channel.subscribe();
await until(() => applied.some((p) => p.block_id === created.block_id));
done({ created: created.block_id, applied: applied.map((p) => p.block_id), metas });`);
    expect(got.applied).toContain(got.created);
    expect(got.metas.length).toBeGreaterThan(0);
    for (const meta of got.metas) expect(meta).toEqual({ replayed: true, id: expect.any(String) });
  });

  it('realtime.md, canvas_seq: functions.invoke of the changes page answers the fields its comment names', async () => {
    const sample = blockAfter('docs/realtime.md', '## canvas_seq', 'ts');
    await mutate({ action: 'create', patch: { type: 'text', content: { text: 'logged' } } });
    const got = await runSample('realtime-changes', `${signedIn}
const lastCanvasSeq = 0;`, sample, `
done({ data, error });`);
    expect(got.error).toBeNull();
    // "// data: { changes: [{ canvas_seq, server_seq, action, block_id, version, block, … }], has_more, …, snapshot_required }"
    const comment = /\/\/ data: \{ changes: \[\{ ([^\]]*?), … \}\], ([^}]*) \}/.exec(sample);
    expect(comment, 'the sample says what data holds').not.toBeNull();
    expect(Object.keys(got.data).sort()).toEqual(['changes', ...comment![2]!.split(', ')].sort());
    expect(got.data.changes.length).toBeGreaterThan(0);
    for (const key of comment![1]!.split(', ')) expect(got.data.changes[0]).toHaveProperty(key);
    expect(got.data.changes[0].canvas_seq).toBe(1);
  });

  it('merge.md, On the client: CanvasSync applies editText at once and the server merges it', async () => {
    const sample = blockAfter('docs/merge.md', '## On the client', 'ts');
    const created = await mutate({ action: 'create', patch: { type: 'text', content: { body: 'abcdefghijklmnop' } } });
    const got = await runSample('merge-canvas-sync', `
const url = process.env.URL!, canvasId = process.env.CANVAS_ID!, token = process.env.TOKEN!;
const blockId = '${created.body.block_id}';
const rendered: { key: string; text: string }[] = [];
const render = (_blockId: string, key: string, text: string) => { rendered.push({ key, text }); };`, sample, `
const local = sync.textOf(blockId, 'body');
// the server's state (sync.blocks) once the edit's own delta came back
while ((sync.blocks.get(blockId)?.content as { body?: string } | undefined)?.body !== local) await new Promise((r) => setTimeout(r, 20));
sync.close();
done({ local, rendered, server: sync.blocks.get(blockId)!.version });`);
    expect(got.local).toBe('abcdefghijklhello mnop');
    expect(got.rendered[0]).toEqual({ key: 'body', text: 'abcdefghijklhello mnop' });
    expect(got.server).toBe(2);
  });

  it('merge.md: the 409 a conflict answers is the one the doc shows', async () => {
    const shown = docJson('docs/merge.md', '**Conflicts carry what a conflict UI needs.**');
    const created = await mutate({ action: 'create', patch: { type: 'text', content: {} } });
    const blockId = created.body.block_id;
    expect((await mutate({ action: 'update', block_id: blockId, base_version: 1, patch: { content: { a: 'from a' } } })).status).toBe(200);
    expect((await mutate({ action: 'update', block_id: blockId, base_version: 2, patch: { content: { b: 'b' } } })).status).toBe(200);
    const bob = await mutate({ action: 'update', block_id: blockId, base_version: 1, patch: { content: { a: 'from bob' } } });
    expect(bob.status).toBe(409);
    expect(bob.body.error.block).toMatchObject({ block_id: blockId, version: 3, content: { a: 'from a', b: 'b' } });
    expect({ ...bob.body.error, block: null }).toEqual({ ...shown.error, block: null });
  });

  it('supabase.md, Realtime: the client sample subscribes and gets block_op (the local gateway serves it as Supabase does)', async () => {
    const sample = blockAfter('docs/supabase.md', '## 3. Realtime: private channels only', 'ts');
    const got = await runSample('supabase-realtime', `${signedIn}
const received: any[] = [];
const apply = (payload: any) => { received.push(payload); };`, sample, `
await until(() => supabase.getChannels()[0]?.state === 'joined');
const created = await mutate({ action: 'create', patch: { type: 'text', content: { text: 'on supabase' } } });
await until(() => received.some((p) => p.block_id === created.block_id));
done(received.map((p) => p.action));`);
    expect(got).toEqual(['create']);
  });
});

describe('docs/realtime.md, Paged snapshots: the sample joins the pages and the changes as written', () => {
  it('on a canvas of several pages, with writes meanwhile, the sample\'s blocks are the canvas the database holds', async () => {
    const sample = blockAfter('docs/realtime.md', '## Paged snapshots', 'ts');
    const { canvasId: bigId, workspaceId, users } = await bigCanvas(db.sql, 80); // about 4.8 MB: two pages
    const sub = JSON.parse(Buffer.from(accessToken.split('.')[1]!, 'base64url').toString()).sub as string;
    await callAs(db.sql, users[0]!, 'set_workspace_member', [workspaceId, sub, 'editor']);
    const got = await runSample('realtime-paged-snapshot', `
const url = process.env.URL!, accessToken = process.env.TOKEN!, canvasId = ${JSON.stringify(bigId)};
// counts the snapshot pages read, and writes a block once the first is read (the changes bring it)
let pages = 0;
const fetchAsIs = globalThis.fetch;
globalThis.fetch = async (input: any, init?: any) => {
  const res = await fetchAsIs(input, init);
  if (String(input).includes('/snapshot') && res.ok && pages++ === 0) {
    const w = await fetchAsIs(\`\${url}/api/v1/canvas/\${canvasId}/mutate\`, { method: 'POST',
      headers: { authorization: \`Bearer \${accessToken}\`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_op_id: crypto.randomUUID(), action: 'create', patch: { type: 'text', content: { text: 'between pages' } } }) });
    if (!w.ok) throw new Error(await w.text());
  }
  return res;
};`, sample, `
// the content's hash: 4.8 MB on one line would not all be read before the exit
const { createHash } = await import('node:crypto');
const digest = (b: any) => createHash('sha256').update(JSON.stringify(b.content)).digest('hex');
done({ pages, blocks: [...blocks.values()].map((b: any) => [b.block_id, b.version, b.y_order, digest(b)]) });`);
    expect(got.pages).toBeGreaterThan(1);
    const rows = await db.sql`select internal.block_json(b) as b from app.blocks b where canvas_id = ${bigId}`;
    const digest = (content: unknown) => createHash('sha256').update(JSON.stringify(content)).digest('hex');
    const truth = new Map(rows.map((r) => [r.b.block_id as string, [r.b.version, r.b.y_order, digest(r.b.content)]]));
    expect([...truth.values()].some((b) => b[2] === digest({ text: 'between pages' }))).toBe(true);
    expect(new Map(got.blocks.map((b: any[]) => [b[0], b.slice(1)]))).toEqual(truth);
  }, 120_000);
});

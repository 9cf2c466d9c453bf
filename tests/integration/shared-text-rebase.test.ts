import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { type, type TextOp, type TextOpComponent } from 'ot-text-unicode';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { requestStatement } from '../../src/db/request.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { prng } from '../../src/prng.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, claimsFor, createCanvas, mutate } from '../helpers/fixtures.ts';
import { sleep } from '../helpers/wait.ts';

// An adversarial check of the shared-text rebase in api.upsert_block_atomic (sql/rpc/mutate.sql:
// prepare_block_change, rebase_block_change; sql/rpc/text_ot.sql: text_op_transform_all) with
// real concurrency: many connections write one block at once, each from the version it last
// heard of (so its base falls behind), with text ops of every shape, content sets on the text key,
// on a key of its own and on a key all share, and type changes. Then, from the operation log alone:
//   (a) replaying the applied ops in canvas_seq order (JSON Merge Patch, then ot-text-unicode's
//       apply) gives exactly the block as stored, with no canvas_seq or version gap;
//   (b) every applied text op is what ot-text-unicode's transform gives for the client's op
//       folded over the text ops logged between its base_version and the version it applied at
//       (side 'left'), and the answer's `text` is the logged op;
//   (c) every acknowledged op is logged once as applied, nothing is applied twice, nothing
//       applied was not acknowledged (or, under backend kills, not asked for);
//   (d) every op applied on a stale base clashes with nothing logged since its base, and every
//       conflict clashes with something logged since its base (the merge rule, docs/merge.md).
// Seeded: a failure names its seed; replay with SHARED_TEXT_SEED=<seed> (the interleaving is the
// server's, so a replay repeats the ops' shapes, not necessarily their order).

const SEED = Number(process.env.SHARED_TEXT_SEED ?? Math.floor(Math.random() * 2 ** 32));
const CLIENTS = 12;
const OPS = 40;          // per client: one user per client stays under 100 mutations a minute
const KEY = 't';
const INITIAL = 'Shared 😀 text, e\u0301 and 中文';
// code points whose counting differs across encodings (astral, combining, ZWJ), as in text-ot-reference
const CODE_POINTS = ['a', 'b', ' ', '\n', 'é', '中', '😀', '🤖', '\u{1F3FD}', '𝒳', '\u0301', '\u200d'];

const db = testDatabase(4);
const pools: Database[] = [];
afterAll(async () => {
  for (const p of pools) await p.close();
  await db.close();
});

const cps = (s: string) => Array.from(s);

type Patch = { content?: Record<string, unknown>; text?: Record<string, TextOp>; type?: string };
type Answer = {
  status: 'success' | 'conflict' | 'failed'; version?: number; canvas_seq?: number | null; duplicate?: boolean;
  block?: { content: Record<string, unknown>; type: string; version: number } | null;
  text?: Record<string, TextOp>; error?: { code: string; message: string; version?: number; changed?: string[] };
};
type Attempt = { user: string; clientOpId: string; base: number; patch: Patch; answer: Answer };
type LogRow = {
  canvas_seq: number; client_op_id: string; actor_id: string; action: string; new_version: number; patch: Patch; result: Answer;
};

/**
 * Calls the RPC as `userId` the way the HTTP layer does (one pipelined request statement), on a
 * lane of its own: each call races the others on the canvas row as if from a process of its own
 * (one process's calls on a canvas would go down one connection, src/db/canvas-lanes.ts).
 */
async function call(sql: Sql, userId: string, canvasId: string, blockId: string, action: string, clientOpId: string, base: number | null,
  patch: Patch): Promise<Answer> {
  const rows = await requestStatement<{ r: Answer }>(new CanvasLanes(sql), canvasId, { claims: claimsFor(userId) },
    'select api.upsert_block_atomic($1, $2, $3, $4, $5, $6) as r', [canvasId, blockId, action, clientOpId, base, patch as never]);
  return rows[0]!.r;
}

/** RFC 7396 on plain JSON objects (the server's internal.json_merge_patch). */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target as object } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** ot-text-unicode's normalize with numeric deletes (the server's text_op_normalize). */
const normalize = (op: TextOp): TextOp =>
  type.normalize(op.map((c) => (typeof c === 'object' && typeof c.d === 'string' ? { d: cps(c.d).length } : c)) as TextOp);

/** Fields a patch changes (internal.patch_fields). */
function fieldsOf(p: Patch): string[] {
  return [...new Set([...Object.keys(p.content ?? {}), ...Object.keys(p.text ?? {})].map((k) => `content.${k}`)),
          ...(p.type !== undefined ? ['type'] : [])];
}

/** Whether `mine` clashes with the logged patch `theirs` (the merge rule): a field both set, except a text op on a key only text ops changed. */
function clashes(mine: Patch, theirs: Patch): string[] {
  return fieldsOf(mine).filter((f) => {
    if (f === 'type') return theirs.type !== undefined;
    const k = f.slice('content.'.length);
    return (theirs.content !== undefined && k in theirs.content) || (theirs.text !== undefined && k in theirs.text && !(mine.text && k in mine.text));
  });
}

/** A field's value in a block, as the server compares it (internal.field_value): `type`, or `content.<key>`. */
const fieldValue = (block: Answer['block'], f: string) => (f === 'type' ? block?.type : block?.content?.[f.slice('content.'.length)]);

/**
 * The clashes the merge rule counts (docs/merge.md), of the fields `logged` named: not a field
 * whose value is as it was at base (`baseBlock`), nor one already set to what `mine` sets, or
 * removed as mine removes it (`theirsBlock`: the block mine was applied to or refused on); a text
 * op of mine keeps its clash.
 */
function realClashes(mine: Patch, logged: LogRow[], baseBlock: Answer['block'], theirsBlock: Answer['block']): string[] {
  const named = [...new Set(logged.flatMap((s) => clashes(mine, s.patch)))];
  return named.filter((f) => {
    if (f !== 'type' && mine.text && f.slice('content.'.length) in mine.text) return true;
    const theirs = fieldValue(theirsBlock, f);
    if (isDeepStrictEqual(fieldValue(baseBlock, f), theirs)) return false;
    const own = f === 'type' ? mine.type : mine.content?.[f.slice('content.'.length)];
    // the field as this patch would leave it is the field as it is (a content key merged, RFC 7396)
    const after = f === 'type' || own === null ? own ?? undefined : mergePatch(theirs, own);
    return !(own !== undefined && isDeepStrictEqual(after, theirs));
  });
}

/** A random op valid on `text`: one insert, one delete, or several components (an edit of a selection). */
function randomOp(random: () => number, text: string): TextOp {
  const n = cps(text).length;
  const word = () => Array.from({ length: 1 + Math.floor(random() * 3) }, () => CODE_POINTS[Math.floor(random() * CODE_POINTS.length)]).join('');
  const r = random();
  if (r < 0.45 || n === 0) { const at = Math.floor(random() * (n + 1)); return normalize([at, word()]); }
  if (r < 0.75) { const at = Math.floor(random() * n); return normalize([at, { d: 1 + Math.floor(random() * Math.min(4, n - at)) }]); }
  // several components: skip, delete, insert, skip, insert … within the text
  const op: TextOpComponent[] = [];
  let left = n;
  for (let i = 0, parts = 2 + Math.floor(random() * 4); i < parts; i++) {
    const skip = Math.floor(random() * Math.min(left + 1, 6));
    if (skip) op.push(skip);
    left -= skip;
    if (random() < 0.5 || left === 0) op.push(word());
    else { const d = 1 + Math.floor(random() * Math.min(left, 3)); op.push(random() < 0.3 ? { d: cps(text).slice(n - left, n - left + d).join('') } : { d }); left -= d; }
  }
  return op; // sent as generated (string deletes too): the server normalizes it
}

async function readLog(canvasId: string): Promise<{ rows: LogRow[]; block: { content: Record<string, unknown>; type: string; version: number } }> {
  const rows = await db.sql<LogRow[]>`
    select canvas_seq::int, client_op_id, actor_id::text, action, new_version, patch, result from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by canvas_seq`;
  const [block] = await db.sql<{ content: Record<string, unknown>; type: string; version: number }[]>`
    select content, type, version from app.blocks where canvas_id = ${canvasId}`;
  return { rows, block: block! };
}

/** (a): the log, replayed from nothing in canvas_seq order, is the block; canvas_seq and versions have no gap. */
function expectReplayIsTheBlock(rows: LogRow[], block: { content: Record<string, unknown>; type: string; version: number }, where: string) {
  expect(rows.map((r) => r.canvas_seq), `${where}: canvas_seq 1..n`).toEqual(rows.map((_, i) => i + 1));
  // every write raises the block's version by one; a create (of a block deleted before) starts wherever it starts
  rows.forEach((r, i) => { if (i > 0 && r.action !== 'create') expect(r.new_version, `${where}: version at canvas_seq ${r.canvas_seq}`).toBe(rows[i - 1]!.new_version + 1); });
  let content: Record<string, unknown> = {};
  let blockType = '';
  for (const r of rows) {
    if (r.action === 'delete') { content = {}; continue; }
    if (r.action === 'create') { content = mergePatch({}, r.patch.content ?? {}) as Record<string, unknown>; blockType = r.patch.type!; continue; }
    content = mergePatch(content, r.patch.content ?? {}) as Record<string, unknown>;
    for (const [k, op] of Object.entries(r.patch.text ?? {})) content[k] = type.apply((content[k] as string | undefined) ?? '', op);
    blockType = r.patch.type ?? blockType;
    // the op's answer carried the block as applied: the replay agrees at every step
    expect(r.result.block?.content, `${where}: replay at canvas_seq ${r.canvas_seq}`).toEqual(content);
  }
  expect(content, `${where}: replayed content = stored content`).toEqual(block.content);
  expect(blockType, `${where}: replayed type`).toBe(block.type);
  expect(rows.at(-1)!.new_version, `${where}: the last op made the block's version`).toBe(block.version);
}

/** (b), (c), (d) for every attempt a client made, against the log. */
function expectAnswersMatchTheLog(attempts: Attempt[], rows: LogRow[], where: string, refused = new Set<string>()) {
  const byVersion = new Map(rows.map((r) => [r.new_version, r]));
  const byOp = new Map<string, LogRow[]>();
  for (const r of rows) byOp.set(`${r.actor_id}/${r.client_op_id}`, [...(byOp.get(`${r.actor_id}/${r.client_op_id}`) ?? []), r]);
  for (const [id, rs] of byOp) expect(rs.length, `${where}: ${id} applied once`).toBe(1);
  const between = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, i) => byVersion.get(from + 1 + i)!);
  let successes = 0;
  const asked = new Set(attempts.map((a) => `${a.user}/${a.clientOpId}`));
  for (const r of rows) if (r.action !== 'create') expect(asked.has(`${r.actor_id}/${r.client_op_id}`), `${where}: canvas_seq ${r.canvas_seq} was asked for`).toBe(true);
  for (const a of attempts) {
    const what = `${where}: ${a.clientOpId} ${JSON.stringify(a.patch)} at base ${a.base} -> ${JSON.stringify(a.answer).slice(0, 400)}`;
    if (a.answer.status === 'success') {
      successes++;
      const logged = byOp.get(`${a.user}/${a.clientOpId}`);
      expect(logged?.length, `${what}: logged once`).toBe(1);
      const row = logged![0]!;
      expect(row.new_version, what).toBe(a.answer.version);
      expect(row.canvas_seq, what).toBe(a.answer.canvas_seq);
      const since = between(a.base, row.new_version - 1);
      const baseBlock = byVersion.get(a.base)!.result.block;
      const theirsBlock = byVersion.get(row.new_version - 1)!.result.block;
      expect(realClashes(a.patch, since, baseBlock, theirsBlock), `${what}: applied over a clash with ${JSON.stringify(since.map((s) => s.patch))}`).toEqual([]);
      for (const [key, op] of Object.entries(a.patch.text ?? {})) {
        let expected = normalize(op);
        for (const s of since) if (s.patch.text?.[key]) expected = type.transform(expected, s.patch.text[key]!, 'left');
        expect(a.answer.text?.[key], `${what}: the op as applied = the library's transform over the log`).toEqual(expected);
        expect(row.patch.text?.[key], `${what}: logged op = answered op`).toEqual(a.answer.text![key]);
      }
      expect(row.patch.content, what).toEqual(a.patch.content);
      expect(row.patch.type, what).toEqual(a.patch.type);
    } else if (a.answer.status === 'conflict') {
      expect(a.answer.error?.code, what).toBe('conflict');
      const now = a.answer.error!.version ?? a.answer.version!;
      expect(now, `${what}: a conflict is behind`).toBeGreaterThan(a.base);
      const clash = realClashes(a.patch, between(a.base, now), byVersion.get(a.base)!.result.block, byVersion.get(now)!.result.block);
      expect(clash.length, `${what}: a conflict needs a real clash`).toBeGreaterThan(0);
      expect(byOp.has(`${a.user}/${a.clientOpId}`), `${what}: a conflict applied nothing`).toBe(false);
    } else if (!refused.has(a.clientOpId)) {
      throw new Error(`${what}: an op valid at its base must apply or conflict`);
    }
  }
  return successes;
}

/**
 * One client: `ops` mutations of the shared block, each against a version it knows: the last one
 * it heard of from its own answers, sometimes an older one it remembers (deeper rebases).
 */
async function client(sql: Sql, user: string, index: number, canvasId: string, blockId: string, start: { version: number; text: string },
  ops: number, seed: number, attempts: Attempt[], send = call, textOnly = false) {
  const random = prng(seed);
  const known: { version: number; text: string }[] = [start];
  for (let j = 0; j < ops; j++) {
    const at = random() < 0.25 ? known[Math.max(0, known.length - 1 - Math.floor(random() * 5))]! : known[known.length - 1]!;
    const r = textOnly ? 0 : random();
    let patch: Patch;
    if (r < 0.62) patch = { text: { [KEY]: randomOp(random, at.text) } };
    else if (r < 0.72) patch = { content: { [`own${index}`]: j } };
    else if (r < 0.78) patch = { text: { [KEY]: randomOp(random, at.text) }, content: { [`own${index}`]: `with text ${j}` } };
    else if (r < 0.85) patch = { content: { shared: `client ${index} op ${j}` } };
    else if (r < 0.91) patch = { content: { [KEY]: `reset by ${index}/${j} 🤖` } };
    else if (r < 0.96) patch = { type: random() < 0.5 ? 'text' : 'note' };
    else patch = { text: { [KEY]: [] } }; // the empty op: applies as nothing
    const clientOpId = randomUUID();
    const answer = await send(sql, user, canvasId, blockId, 'update', clientOpId, at.version, patch);
    attempts.push({ user, clientOpId, base: at.version, patch, answer });
    const block = answer.block;
    if (block && typeof block.content?.[KEY] === 'string') known.push({ version: block.version, text: block.content[KEY] as string });
  }
}

async function sharedBlock(clients: number) {
  const { canvasId, workspaceId, users } = await createCanvas(db.sql);
  const writers: string[] = [];
  for (let i = 0; i < clients; i++) writers.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `rebase-${i}`));
  const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { [KEY]: INITIAL } } });
  expect(created.status).toBe('success');
  return { canvasId, blockId: created.block_id!, writers, owner: users.owner!, start: { version: created.version!, text: INITIAL } };
}

function pool(max: number, name: string) {
  const p = createDatabase(testDatabaseUrl(), { max, applicationName: `${name}-${process.pid}-${pools.length}` });
  pools.push(p);
  return { sql: p.sql, app: `${name}-${process.pid}-${pools.length - 1}` };
}

beforeAll(() => console.log(`shared-text-rebase.test.ts seed: ${SEED} (replay with SHARED_TEXT_SEED=${SEED})`));

describe('a shared text under concurrent stale writers', () => {
  it(`${CLIENTS} connections x ${OPS} mixed ops on one block: the log replays to the block, every op is the library's rebase, conflicts are real`, async () => {
    const { canvasId, blockId, writers, start } = await sharedBlock(CLIENTS);
    const { sql } = pool(CLIENTS, 'rebase-mix');
    const attempts: Attempt[] = [];
    await Promise.all(writers.map((user, i) => client(sql, user, i, canvasId, blockId, start, OPS, SEED + i, attempts)));
    const { rows, block } = await readLog(canvasId);
    const where = `seed ${SEED}`;
    expectReplayIsTheBlock(rows, block, where);
    const successes = expectAnswersMatchTheLog(attempts, rows, where);
    expect(rows.length, `${where}: every applied op was acknowledged (and the create)`).toBe(successes + 1);
    const conflicts = attempts.filter((a) => a.answer.status === 'conflict').length;
    const rebased = attempts.filter((a) => a.answer.status === 'success' && a.patch.text && a.base < a.answer.version! - 1).length;
    console.log(`${where}: ${successes} applied (${rebased} text ops rebased), ${conflicts} conflicts; final text ${cps(block.content[KEY] as string).length} code points`);
    // the run exercised what it is about
    expect(rebased).toBeGreaterThan(CLIENTS * OPS / 5);
    expect(conflicts).toBeGreaterThan(0);
  }, 60_000);

  it('hostile text ops among concurrent typists: limits hold, nothing invalid is logged, no-ops stay no-ops', async () => {
    const { canvasId, blockId, writers, start } = await sharedBlock(7);
    const { sql } = pool(7, 'rebase-hostile');
    const attempts: Attempt[] = [];
    const typists = Promise.all(writers.slice(1).map((user, i) => client(sql, user, i, canvasId, blockId, start, 25, SEED + 100 + i, attempts, call, true)));
    const hostile = writers[0]!;
    // each sent from the version the hostile client first knew (stale once the typists run),
    // with what it must answer
    const cases: Array<[Patch, 'success' | string]> = [
      [{ text: { [KEY]: [2147483647, 'x'] } }, 'patch.text.t'],                     // skips past the end, after any transform
      [{ text: { [KEY]: [{ d: 2147483647 }] } }, 'patch.text.t'],
      [{ text: { [KEY]: [2147483647, 2147483647, 'x'] } }, 'patch.text.t'],          // skips that add up past int4
      [{ text: { [KEY]: Array.from({ length: 1000 }, (_, i) => CODE_POINTS[i % CODE_POINTS.length]!) } }, 'success'], // the most components
      [{ text: { [KEY]: Array.from({ length: 1001 }, () => 'a') } }, 'patch.text.t'],
      [{ text: { [KEY]: [0, 'x'] } }, 'patch.text.t'],
      [{ text: { [KEY]: [1.5, 'x'] } }, 'patch.text.t'],
      [{ text: { [KEY]: [{ d: '' }] } }, 'patch.text.t'],
      [{ text: { [KEY]: [''] } }, 'patch.text.t'],
      [{ text: { [KEY]: [{ d: -1 }] } }, 'patch.text.t'],
      [{ text: { [KEY]: [1e30, 'x'] } }, 'patch.text.t'],
      [{ text: { [KEY]: [] } }, 'success'],
      [{ text: { [KEY]: ['\u0301\u200d😀\u{1F3FD}'] } }, 'success'],                // combining marks and a ZWJ at the very start
      [{ text: { [KEY]: [{ d: cps(INITIAL).slice(0, 3).join('') }] } }, 'success'], // a delete by text, counted in code points
      [{ text: { [KEY]: [{ d: 1 }, { d: '😀' }, 'x', 'y'] } }, 'success'],          // not normalized
      [{ text: { nope: ['x'] } }, 'success'],                                       // a key that is not there yet: edited from ''
      [{ text: { [KEY]: ['x'] }, content: { [KEY]: 'y' } }, 'patch.text.t'],
    ];
    const refused = new Set<string>();
    const statuses: string[] = [];
    for (const [i, [patch, expected]] of cases.entries()) {
      const clientOpId = randomUUID();
      const answer = await call(sql, hostile, canvasId, blockId, 'update', clientOpId, start.version, patch);
      statuses.push(answer.status === 'failed' ? (answer.error as { field?: string })?.field ?? answer.error!.code : answer.status);
      if (expected !== 'success') {
        refused.add(clientOpId);
      }
      // the typists only send text ops: nothing of these can clash, so each applies or is refused as invalid
      attempts.push({ user: hostile, clientOpId, base: start.version, patch, answer });
    }
    await typists;
    expect(statuses, `seed ${SEED}`).toEqual(cases.map(([, e]) => e));
    const { rows, block } = await readLog(canvasId);
    expectReplayIsTheBlock(rows, block, `seed ${SEED} hostile`);
    expectAnswersMatchTheLog(attempts, rows, `seed ${SEED} hostile`, refused);
    expect(block.content.nope).toBe('x');
    // the refused ones left no applied row
    for (const id of refused) expect(rows.some((r) => r.client_op_id === id)).toBe(false);
  }, 60_000);

  it('writers whose backends are killed mid-burst resend the same op: nothing acknowledged is lost, nothing applies twice', async () => {
    const clients = 8;
    const { canvasId, blockId, writers, start } = await sharedBlock(clients);
    const { sql, app } = pool(clients, 'rebase-kill');
    const admin = testDatabase(1);
    const attempts: Attempt[] = [];
    let lost = 0;
    // what the HTTP layer's client does on a 503: send the op again, same client_op_id, same base
    const resend: typeof call = async (...args) => {
      for (;;) {
        try {
          return await call(...args);
        } catch (err) {
          if (!isConnectionFailure(err)) throw err;
          lost++;
          await sleep(5);
        }
      }
    };
    let storming = true;
    // bounded (about what an idle machine's run kills): on a loaded one, where a new connection
    // takes longer than the gap between kills, an endless storm could starve the clients for ever
    const storm = (async () => {
      let kills = 0;
      while (storming && kills < 60) {
        // a backend of the pool in whatever it is doing: mid-RPC, waiting for the canvas lock, at COMMIT, idle
        const [{ killed }] = await admin.sql`select count(pg_terminate_backend(pid))::int as killed from (select pid from pg_stat_activity
          where application_name = ${app} order by random() limit 1) b` as unknown as [{ killed: number }];
        kills += killed;
        await sleep(40 + Math.random() * 40);
      }
      return kills;
    })();
    try {
      await Promise.all(writers.map((user, i) => client(sql, user, i, canvasId, blockId, start, 30, SEED + 200 + i, attempts, resend)));
    } finally {
      storming = false;
    }
    const kills = await storm;
    await admin.close();
    const { rows, block } = await readLog(canvasId);
    const where = `seed ${SEED}, ${kills} backends killed, ${lost} requests lost`;
    expect(kills, where).toBeGreaterThan(3);
    expectReplayIsTheBlock(rows, block, where);
    // each attempt got an answer in the end: every applied op is one of them, acknowledged once
    const successes = expectAnswersMatchTheLog(attempts, rows, where);
    expect(rows.length, where).toBe(successes + 1);
    console.log(`${where}: ${successes} applied, ${attempts.filter((a) => a.answer.duplicate).length} answered as duplicates`);
  }, 60_000);

  // A block_id deleted and created again continues its versions (docs/mutations.md), so the log
  // never holds two blocks' rows at one version: typing on the new block rebases over its own log,
  // and an op made for the deleted block is a conflict, never applied to unrelated text.
  it('a block deleted and created again under its id: typing on it merges; an op made for the deleted block never lands on the new one', async () => {
    const { canvasId, blockId, writers, owner, start } = await sharedBlock(6);
    const { sql } = pool(6, 'rebase-recreate');
    // the first block reaches version 12; a client keeps what it knew at version 8
    let known = start;
    let old = start;
    for (let j = 0; j < 11; j++) {
      const answer = await call(sql, writers[0]!, canvasId, blockId, 'update', randomUUID(), known.version, { text: { [KEY]: [1 + (j % 3), `${j}`] } });
      expect(answer.status).toBe('success');
      known = { version: answer.version!, text: answer.block!.content[KEY] as string };
      if (known.version === 8) old = known;
    }
    expect((await call(sql, writers[0]!, canvasId, blockId, 'delete', randomUUID(), known.version, {})).status).toBe('success');
    const again = await mutate(db.sql, owner, canvasId, { blockId, action: 'create', patch: { type: 'text', content: { [KEY]: 'a new text' } } });
    expect(again.status).toBe('success');
    const fresh = { version: again.version!, text: 'a new text' };

    const attempts: Attempt[] = [];
    await Promise.all(writers.slice(1).map((user, i) => client(sql, user, i, canvasId, blockId, fresh, 15, SEED + 300 + i, attempts, call, true)));
    // the new block is past version 8 now: an op made for the first block's version 8 must not apply to it
    const { rows: before } = await readLog(canvasId);
    expect(before.at(-1)!.new_version).toBeGreaterThan(8);
    const stale = await call(sql, writers[0]!, canvasId, blockId, 'update', randomUUID(), old.version, { text: { [KEY]: [cps(old.text).length, '!'] } });
    expect(stale.status, `seed ${SEED}: ${JSON.stringify(stale).slice(0, 300)}`).toBe('conflict');

    const { rows, block } = await readLog(canvasId);
    const where = `seed ${SEED}, recreated`;
    expectReplayIsTheBlock(rows, block, where);
    const lastCreate = rows.map((r) => r.action).lastIndexOf('create'); // the new block's create (ES2022 lib: no findLastIndex)
    const since = rows.slice(lastCreate);
    // only text ops on the new block: each one applies, rebased like on any block
    const successes = expectAnswersMatchTheLog(attempts, since, where);
    expect(attempts.filter((a) => a.answer.status !== 'success').map((a) => a.answer.error), where).toEqual([]);
    expect(since.length, where).toBe(successes + 1);
  }, 60_000);
});

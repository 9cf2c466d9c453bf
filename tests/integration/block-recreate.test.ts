import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, callAs, createCanvas } from '../helpers/fixtures.ts';

// A block created again under a used block_id (sql/rpc/mutate.sql, docs/mutations.md "Versions")
// continues that id's versions, and an op made for the deleted block is a conflict: attacked
// through api.upsert_block_atomic / api.upsert_blocks_atomic, with concurrent connections and
// killed backends, across canvases, through subtree deletes and the log's retention.

const db = testDatabase(3);
const pools: Database[] = [];
afterAll(async () => {
  for (const p of pools) await p.close();
  await db.close();
});

type Answer = {
  status: 'success' | 'conflict' | 'failed'; version?: number; duplicate?: boolean; canvas_seq?: number;
  block?: { content: Record<string, unknown>; version: number } | null; text?: Record<string, unknown>;
  error?: { code: string; message: string; changed?: string[]; fields?: Record<string, unknown> };
  results?: Answer[]; failed_index?: number | null;
};

const op = (sql: Sql, user: string, canvasId: string, blockId: string | null, action: string, base: number | null,
  patch: Record<string, unknown>, clientOpId = randomUUID()) =>
  callAs<Answer>(sql, user, 'upsert_block_atomic', [canvasId, blockId, action, clientOpId, base, patch]);
const batch = (sql: Sql, user: string, canvasId: string, ops: Record<string, unknown>[]) =>
  callAs<Answer>(sql, user, 'upsert_blocks_atomic', [canvasId, ops]);

const recreatedConflict = (a: Answer, what: string) => {
  expect(a.status, `${what}: ${JSON.stringify(a)}`).toBe('conflict');
  expect(a.error?.code, what).toBe('conflict');
  expect(a.error?.message, what).toMatch(/deleted and created again/);
};

/** The block's success log rows in commit order: versions 1, 2, 3, … with no gap or repeat across its lives. */
async function lifeLog(blockId: string) {
  const rows = await db.sql<{ action: string; base_version: number | null; new_version: number; canvas_id: string }[]>`
    select action, base_version, new_version, canvas_id::text from app.block_operations
    where block_id = ${blockId} and status = 'success' order by server_seq`;
  expect(rows.map((r) => r.new_version), `versions of ${blockId}: ${rows.map((r) => r.action).join(',')}`).toEqual(rows.map((_, i) => i + 1));
  return rows;
}

describe('a block created again under its block_id', () => {
  it('one batch creates, edits, deletes, creates again and edits one id: versions 1..5; ops made for the first life conflict, the second rebases', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const id = randomUUID();
    const b = await batch(db.sql, owner, canvasId, [
      { block_id: id, action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { t: 'old life' } } },
      { block_id: id, action: 'update', client_op_id: randomUUID(), base_version: 1, patch: { text: { t: [3, 'X'] } } },
      { block_id: id, action: 'delete', client_op_id: randomUUID(), base_version: 2 },
      { block_id: id, action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { t: 'new' } } },
      { block_id: id, action: 'update', client_op_id: randomUUID(), base_version: 4, patch: { text: { t: [3, '!'] } } },
    ]);
    expect(b.status, JSON.stringify(b)).toBe('success');
    expect(b.results!.map((r) => r.version)).toEqual([1, 2, 3, 4, 5]);
    expect(b.results![4]!.block!.content).toEqual({ t: 'new!' });
    // the old life's versions (1, 2) and the delete's (3): every base below the create is a conflict, with the new block
    for (const base of [1, 2, 3]) {
      const a = await op(db.sql, owner, canvasId, id, 'update', base, { text: { t: [1, 'Z'] } });
      recreatedConflict(a, `base ${base}`);
      expect(a.block!.content).toEqual({ t: 'new!' });
      expect(a.version).toBe(5);
    }
    recreatedConflict(await op(db.sql, owner, canvasId, id, 'update', 2, { content: { other: 1 } }), 'disjoint field, base 2');
    recreatedConflict(await op(db.sql, owner, canvasId, id, 'move', 1, { y_order: 'zz' }), 'move, base 1');
    // the create's own version and later: rebased over the new block's log only
    const r = await op(db.sql, owner, canvasId, id, 'update', 4, { text: { t: ['>'] } });
    expect(r.status, JSON.stringify(r)).toBe('success');
    expect(r.block!.content).toEqual({ t: '>new!' });
    const old = await op(db.sql, owner, canvasId, id, 'update', 6, { content: { t: 'x' } });
    expect(old.status).toBe('success');
    expect((await op(db.sql, owner, canvasId, id, 'update', 8, { content: { t: 'y' } })).error?.code).toBe('invalid_input');
    await lifeLog(id);
  });

  it('a delete that was never seen, then a stale text op at every base around the boundary', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const c = await op(db.sql, owner, canvasId, null, 'create', null, { type: 'text', content: { t: 'abc' } });
    const id = c.block!['block_id' as never] as string;
    expect((await op(db.sql, owner, canvasId, id, 'update', 1, { text: { t: [3, 'd'] } })).version).toBe(2);
    expect((await op(db.sql, owner, canvasId, id, 'delete', 2, {})).version).toBe(3);
    // a stale delete of the gone block; the original create retried: its first answer, nothing applied
    expect((await op(db.sql, owner, canvasId, id, 'delete', 2, {})).error?.code).toBe('not_found');
    const re = await op(db.sql, owner, canvasId, id, 'create', null, { type: 'text', content: { t: 'abc' } });
    expect(re.version).toBe(4);
    // text equal to the old block's at version 1, version numbers now past it: nothing made for v1..v3 applies
    for (const base of [1, 2, 3]) recreatedConflict(await op(db.sql, owner, canvasId, id, 'update', base, { text: { t: [3, 'Q'] } }), `base ${base}`);
    expect((await op(db.sql, owner, canvasId, id, 'update', 4, { text: { t: [3, 'Q'] } })).block!.content).toEqual({ t: 'abcQ' });
    // a stale delete made for the old block is a conflict too, not a delete of the new one
    recreatedConflict(await op(db.sql, owner, canvasId, id, 'delete', 2, {}), 'stale delete');
    expect((await db.sql`select version from app.blocks where block_id = ${id}`)[0]!.version).toBe(5);
    await lifeLog(id);
  });

  it('created again on another tenant\'s canvas: versions continue, and its conflicts tell nothing about the other canvas\'s block', async () => {
    const a = await createCanvas(db.sql);
    const b = await createCanvas(db.sql);
    const id = randomUUID();
    expect((await op(db.sql, a.users.owner!, a.canvasId, id, 'create', null, { type: 'text', content: { secret_plan: 's' } })).version).toBe(1);
    expect((await op(db.sql, a.users.owner!, a.canvasId, id, 'update', 1, { content: { launch_codes: 'CODE-XQZ' } })).version).toBe(2);
    expect((await op(db.sql, a.users.owner!, a.canvasId, id, 'delete', 2, {})).version).toBe(3);
    const re = await op(db.sql, b.users.owner!, b.canvasId, id, 'create', null, { type: 'text', content: { mine: 'x' } });
    expect(re.version).toBe(4);
    expect((await op(db.sql, b.users.owner!, b.canvasId, id, 'update', 4, { content: { mine: 'y' } })).version).toBe(5);
    // on canvas a the id is gone
    expect((await op(db.sql, a.users.owner!, a.canvasId, id, 'update', 2, { content: { launch_codes: '0' } })).error?.code).toBe('not_found');
    for (const base of [1, 2, 3]) {
      const c = await op(db.sql, b.users.owner!, b.canvasId, id, 'update', base, { content: { launch_codes: '0' } });
      recreatedConflict(c, `base ${base}`);
      const leaked = JSON.stringify(c);
      // CODE-XQZ: upper case, so no uuid or timestamp in the answer can contain it (a digit string like 1234 can: microseconds)
      expect(leaked, `base ${base}: nothing of canvas a's block`).not.toMatch(/secret_plan|CODE-XQZ/);
      expect(c.error!.changed, `base ${base}`).not.toContain('content.launch_codes');
      expect(c.error!.changed, `base ${base}`).not.toContain('content.secret_plan');
    }
    const rows = await lifeLog(id);
    expect(rows.map((r) => r.canvas_id)).toEqual([a.canvasId, a.canvasId, a.canvasId, b.canvasId, b.canvasId]);
  });

  it('a child deleted with its parent takes no version of its own; parent and child created again continue theirs', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const parent = randomUUID();
    const child = randomUUID();
    const first = await batch(db.sql, owner, canvasId, [
      { block_id: parent, action: 'create', client_op_id: randomUUID(), patch: { type: 'group' } },
      { block_id: child, action: 'create', client_op_id: randomUUID(), patch: { type: 'text', parent_id: parent, content: { t: 'c' } } },
      { block_id: child, action: 'update', client_op_id: randomUUID(), base_version: 1, patch: { content: { t: 'cc' } } },
    ]);
    expect(first.status, JSON.stringify(first)).toBe('success');
    const del = await op(db.sql, owner, canvasId, parent, 'delete', 1, {});
    expect(del.version).toBe(2);
    expect(new Set((del as unknown as { deleted_ids: string[] }).deleted_ids)).toEqual(new Set([parent, child]));
    // created again in one batch (an undo): the child first fails (its parent is not there yet), then in order
    const badOrder = await batch(db.sql, owner, canvasId, [
      { block_id: child, action: 'create', client_op_id: randomUUID(), patch: { type: 'text', parent_id: parent, content: { t: 'cc' } } },
    ]);
    expect(badOrder.status).toBe('failed');
    const undo = await batch(db.sql, owner, canvasId, [
      { block_id: parent, action: 'create', client_op_id: randomUUID(), patch: { type: 'group' } },
      { block_id: child, action: 'create', client_op_id: randomUUID(), patch: { type: 'text', parent_id: parent, content: { t: 'cc' } } },
    ]);
    expect(undo.status, JSON.stringify(undo)).toBe('success');
    expect(undo.results!.map((r) => r.version)).toEqual([3, 3]);
    recreatedConflict(await op(db.sql, owner, canvasId, child, 'update', 2, { content: { t: 'for the old child' } }), 'child base 2');
    recreatedConflict(await op(db.sql, owner, canvasId, parent, 'update', 1, { content: { x: 1 } }), 'parent base 1');
    expect((await op(db.sql, owner, canvasId, child, 'update', 3, { content: { t: 'new' } })).version).toBe(4);
  });

  it('concurrent creators, deleters and stale editors of one id, with killed backends resent: versions 1..n, every acknowledged op once, no op across a re-creation', async () => {
    const WRITERS = 6;
    const ROUNDS = 14;
    // updates that must land, so the run exercises edits between the lives and not only creates,
    // deletes and conflicts: the writers go on past ROUNDS until they have, whatever the schedule
    const MIN_UPDATES = 12;
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const writers: string[] = [];
    for (let i = 0; i < WRITERS; i++) writers.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `recreate-${i}`));
    const id = randomUUID();
    const app = `recreate-${process.pid}-${randomUUID().slice(0, 8)}`;
    const p = createDatabase(testDatabaseUrl(), { max: WRITERS, applicationName: app });
    pools.push(p);
    const admin = testDatabase(1);
    pools.push(admin);
    let known = 0;  // the last version anyone heard of (stale for most)
    let updatesAcked = 0;
    const acked = new Map<string, Answer>();  // user/client_op_id -> answer
    let killed = 0;
    const tally: Record<string, number> = {};
    const killer = (async () => {
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 40));
        const [row] = await admin.sql`select count(pg_terminate_backend(pid))::int as n from (
          select pid from pg_stat_activity where application_name = ${app} and state = 'active' limit 1) s`;
        killed += row!.n;
      }
    })();
    const send = async (user: string, action: string, base: number | null, patch: Record<string, unknown>) => {
      const clientOpId = randomUUID();
      for (let attempt = 0; ; attempt++) {
        try {
          const a = await op(p.sql, user, canvasId, id, action, base, patch, clientOpId);
          if (a.status === 'success') acked.set(`${user}/${clientOpId}`, a);
          if (a.status === 'success' && action === 'update') updatesAcked++;
          if (a.version) known = Math.max(known, a.version);
          return a;
        } catch (e) {
          if (!isConnectionFailure(e) || attempt > 5) throw e;  // killed: resent, same client_op_id
        }
      }
    };
    // one writer undoes and redoes the block three times (a delete retried from the version its
    // conflict answer names until it lands), so the id has several lives however the others run
    const recreator = async (user: string) => {
      for (let j = 0; j < 3; j++) {
        for (let t = 0; t < 20; t++) {
          const d = await send(user, 'delete', known, {});
          if (d.status === 'success' || d.error?.code === 'not_found') break;
        }
        await send(user, 'create', null, { type: 'text', content: { t: `life by the recreator/${j}` } });
      }
    };
    await Promise.all([recreator(writers[0]!), ...writers.map(async (user, w) => {
      for (let i = 0; i < ROUNDS || (updatesAcked < MIN_UPDATES && i < ROUNDS * 20); i++) {
        const r = (w * 5 + i) % 10;
        const base = Math.max(0, known - (i % 3));
        let a: Answer;
        if (r === 0) a = await send(user, 'create', null, { type: 'text', content: { t: `life by ${w}/${i}` } });
        else if (r === 5) a = await send(user, 'delete', known, {});
        else if (r % 2 === 0) a = await send(user, 'update', base, { text: { t: [`${w}`] } });
        else a = await send(user, 'update', base, { content: { [`k${w}`]: i } });
        const k = `${a.status}:${a.error?.code ?? ''}${a.error?.message?.includes('created again') ? ':recreated' : ''}`;
        tally[k] = (tally[k] ?? 0) + 1;
      }
    })]);
    await killer;
    const rows = await db.sql<{ actor_id: string; client_op_id: string; action: string; base_version: number | null; new_version: number; patch: any; block: any }[]>`
      select actor_id::text, client_op_id, action, base_version, new_version, patch, block from app.block_operations
      where block_id = ${id} and status = 'success' order by server_seq`;
    // one version line across every life of the id
    expect(rows.map((r) => r.new_version)).toEqual(rows.map((_, i) => i + 1));
    // nothing applied twice; everything acknowledged is there, with its answer's version
    const byOp = new Map(rows.map((r) => [`${r.actor_id}/${r.client_op_id}`, r]));
    expect(byOp.size).toBe(rows.length);
    for (const [k, a] of acked) expect(byOp.get(k)?.new_version, k).toBe(a.version);
    const createAt = rows.filter((r) => r.action === 'create').map((r) => r.new_version);
    const lives = rows.filter((r) => r.action === 'create').length;
    // replay of each life gives the block each op's answer carried; the last life is the stored block
    let content: Record<string, unknown> | null = null;
    for (const r of rows) {
      if (r.action === 'delete') { content = null; continue; }
      if (r.action === 'create') { content = { ...r.patch.content }; continue; }
      expect(content, `op at ${r.new_version} has a live block`).not.toBeNull();
      const next: Record<string, unknown> = { ...content!, ...(r.patch.content ?? {}) };
      for (const [k, t] of Object.entries(r.patch.text ?? {}) as [string, string[]][]) next[k] = t[0] + String(next[k] ?? '');
      expect(r.block.content, `replay at ${r.new_version}`).toEqual(next);
      content = next;
    }
    const [stored] = await db.sql`select content, version from app.blocks where block_id = ${id}`;
    if (content === null) expect(stored).toBeUndefined();
    else { expect(stored!.content).toEqual(content); expect(stored!.version).toBe(rows.length); }
    console.log(`block-recreate: ${rows.length} applied, ${lives} lives (created at ${createAt.join(',')}), ${killed} backends killed`, tally);
    expect(lives).toBeGreaterThan(1);
    expect(rows.filter((r) => r.action === 'update').length).toBeGreaterThanOrEqual(MIN_UPDATES);  // updates applied too
    // and an op based just before the last life began is a conflict, whatever the schedule was
    if (content === null) await send(writers[1]!, 'create', null, { type: 'text', content: { t: 'last life' } });
    const lastCreate = (await db.sql`select max(new_version)::int as v from app.block_operations
      where block_id = ${id} and status = 'success' and action = 'create'`)[0]!.v as number;
    recreatedConflict(await send(writers[2]!, 'update', lastCreate - 1, { content: { late: true } }), `base ${lastCreate - 1}`);
  }, 30_000);

  it('acknowledged answers never applied across a re-creation (client base vs the log)', async () => {
    // every success's client base_version: no create logged in (base, new_version)
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const writers = [users.owner!];
    for (let i = 0; i < 3; i++) writers.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `recreate-b-${i}`));
    const id = randomUUID();
    await op(db.sql, writers[0]!, canvasId, id, 'create', null, { type: 'text', content: { t: '' } });
    const successes: { base: number; version: number }[] = [];
    let known = 1;
    await Promise.all(writers.map(async (user, w) => {
      for (let i = 0; i < 15; i++) {
        const base = known;
        let a: Answer;
        if (w === 0 && i % 3 === 1) {
          // a client that just read the block deletes it (an undo of its creation)
          do {
            const [now] = await db.sql<{ version: number }[]>`select version from app.blocks where block_id = ${id}`;
            a = await op(db.sql, user, canvasId, id, 'delete', now?.version ?? base, {});
          } while (a.status === 'conflict');
        }
        else if (w === 0 && i % 3 === 2) a = await op(db.sql, user, canvasId, id, 'create', null, { type: 'text', content: { t: '' } });
        else {
          a = await op(db.sql, user, canvasId, id, 'update', base, { text: { t: ['x'] } });
          if (a.status === 'success') successes.push({ base, version: a.version! });
        }
        if (a.version) known = Math.max(known, a.version);
      }
    }));
    const creates = (await db.sql<{ v: number }[]>`select new_version v from app.block_operations
      where block_id = ${id} and status = 'success' and action = 'create'`).map((r) => r.v);
    expect(successes.length).toBeGreaterThan(10);
    expect(creates.length).toBeGreaterThan(2);
    for (const s of successes) {
      expect(creates.filter((c) => c > s.base && c < s.version), `applied at ${s.version} from base ${s.base}`).toEqual([]);
    }
    await lifeLog(id);
  }, 20_000);

  it('after retention removed the old block\'s log, its id starts over at 1 and a stale op is refused or rebased sanely', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const id = randomUUID();
    await op(db.sql, owner, canvasId, id, 'create', null, { type: 'text', content: { t: 'a' } });
    await op(db.sql, owner, canvasId, id, 'update', 1, { content: { t: 'b' } });
    await op(db.sql, owner, canvasId, id, 'update', 2, { content: { t: 'c' } });
    await op(db.sql, owner, canvasId, id, 'delete', 3, {});
    // every row of the old life older than the retention (and only those: other tests' rows stay)
    await db.sql`update app.block_operations set created_at = now() - interval '400 days' where block_id = ${id}`;
    await db.sql`update app.block_tombstones set deleted_at = now() - interval '400 days' where block_id = ${id}`;
    const [done] = await db.sql`select internal.cleanup() as r`;
    expect((await db.sql`select count(*)::int n from app.block_tombstones where block_id = ${id}`)[0]!.n).toBe(0);
    expect(done!.r.operations_deleted).toBeGreaterThanOrEqual(4);
    expect((await db.sql`select count(*)::int n from app.block_operations where block_id = ${id}`)[0]!.n).toBe(0);
    const re = await op(db.sql, owner, canvasId, id, 'create', null, { type: 'text', content: { t: 'new' } });
    expect(re.status).toBe('success');
    expect(re.version).toBe(1);
    expect((await op(db.sql, owner, canvasId, id, 'update', 3, { content: { t: 'old' } })).error?.code).toBe('invalid_input');
    expect((await op(db.sql, owner, canvasId, id, 'update', 1, { content: { t: 'n2' } })).version).toBe(2);
    // a partly purged log: the next stale op is rebase_required, not a crash
    await db.sql`update app.block_operations set created_at = now() - interval '400 days' where block_id = ${id} and new_version = 2`;
    await db.sql`select internal.cleanup()`;
    expect((await op(db.sql, owner, canvasId, id, 'delete', 2, {})).version).toBe(3);
    const again = await op(db.sql, owner, canvasId, id, 'create', null, { type: 'text', content: { t: 'third' } });
    expect(again.version).toBe(4);
    expect((await op(db.sql, owner, canvasId, id, 'update', 1, { content: { t: 'x' } })).error?.code).toBe('rebase_required');
    recreatedConflict(await op(db.sql, owner, canvasId, id, 'update', 2, { content: { t: 'x' } }), 'base 2');
  });

  it('a child deleted with its parent after its own log aged out: created again, it continues from its last version, and an op made for it conflicts', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const parent = randomUUID();
    const child = randomUUID();
    await op(db.sql, owner, canvasId, parent, 'create', null, { type: 'text' });
    await op(db.sql, owner, canvasId, child, 'create', null, { type: 'text', parent_id: parent, content: { t: 'old' } });
    await op(db.sql, owner, canvasId, child, 'update', 1, { content: { t: 'old 2' } });
    expect((await op(db.sql, owner, canvasId, child, 'update', 2, { content: { t: 'old 3' } })).version).toBe(3);
    // the child's own rows age out of the log; the parent's delete (which logs no row for it) is today
    await db.sql`update app.block_operations set created_at = now() - interval '400 days' where block_id = ${child}`;
    await db.sql`select internal.cleanup()`;
    expect((await db.sql`select count(*)::int n from app.block_operations where block_id = ${child}`)[0]!.n).toBe(0);
    expect((await op(db.sql, owner, canvasId, parent, 'delete', 1, {})).status).toBe('success');
    const again = await op(db.sql, owner, canvasId, child, 'create', null, { type: 'text', content: { t: 'new' } });
    expect(again.version, 'continues from the deleted child\'s version 3').toBe(4);
    await op(db.sql, owner, canvasId, child, 'update', 4, { content: { t: 'new 2' } });
    await op(db.sql, owner, canvasId, child, 'update', 5, { content: { t: 'new 3' } });
    // an edit made for the deleted child at its version 3 never lands on the new one
    recreatedConflict(await op(db.sql, owner, canvasId, child, 'update', 3, { content: { t: 'meant for the old child' } }), 'base 3');
    expect((await db.sql`select content ->> 't' as t from app.blocks where block_id = ${child}`)[0]!.t).toBe('new 3');
  });
});

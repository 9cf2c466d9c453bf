import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { migrate } from '../../src/db/migrate.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { FIXTURE_PASSWORD, generateFixture, writePostgresFixture, writeSqliteFixture } from '../../src/upgrade/v1-fixture.ts';
import { runUpgrade, type UpgradeOptions } from '../../src/upgrade/upgrade.ts';
import { workspaceIdFor } from '../../src/upgrade/v1-ids.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { blockText, LocalProvider } from '../../src/worker/providers.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { callAs, createUser } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// npm run upgrade:v1 (src/upgrade/, docs/upgrade-v1.md) on generated v1 fixtures of 10,000 blocks
// over 100 canvases, each into its own freshly migrated v2 database: a Postgres v1 and a SQLite
// v1 upgrade with 0 differences; a run killed (SIGKILL) halfway and run again ends where an
// uninterrupted run ends; the upgraded database serves snapshots and mutations over HTTP. The
// 100,000-block run is `npm run upgrade:v1:acceptance` (not part of npm test).

const repoRoot = new URL('../..', import.meta.url).pathname;
// named after the test database (TEST_DATABASE_URL), so a run's databases are its own
const prefix = `${new URL(testDatabaseUrl()).pathname.slice(1) || 'potentia'}_upgrade_${process.pid}`;
const urlOf = (name: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${name}`; return u.toString(); };
const db = { v1: `${prefix}_v1`, a: `${prefix}_a`, b: `${prefix}_b`, c: `${prefix}_c`, sq: `${prefix}_sq`, lite: `${prefix}_lite` };
const sqlitePath = join(tmpdir(), `${prefix}.sqlite`);
const BLOCKS = 10_000;
const CANVASES = 100;
// few embeddings: each vector costs an HNSW insert (~15 ms here); the acceptance run has 10 %
const EMBEDDED = 0.02;

const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
const conns: Sql[] = [];
const connect = (name: string) => { const s = postgres(urlOf(name), { max: 2, onnotice: () => {} }); conns.push(s); return s; };

async function upgrade(opts: Partial<UpgradeOptions> & { from: string; to: string }) {
  const lines: string[] = [];
  const result = await runUpgrade({ batch: 1000, ...opts, log: (l) => lines.push(l) });
  return { ...result, lines };
}

/** Everything the upgrade wrote, minus what differs between two runs by nature (server_seq values, now()). */
async function digest(sql: Sql): Promise<Record<string, string>> {
  const parts: Record<string, string> = {
    users: `select id, email, encrypted_password, raw_user_meta_data, email_confirmed_at, created_at from auth.users order by id`,
    workspaces: `select workspace_id, name, created_by from app.workspaces order by 1`,
    members: `select workspace_id, user_id, role from app.workspace_members order by 1, 2`,
    canvases: `select canvas_id, workspace_id, title, settings, version, created_by, created_at, updated_at, last_canvas_seq from app.canvases order by 1`,
    blocks: `select block_id, canvas_id, parent_id, type, content, y_order, version, created_at, created_by, updated_at, updated_by,
                    vector::text, embedding_model, embedded_hash, embedded_at from app.blocks order by 1`,
    operations: `select canvas_id, canvas_seq, block_id, client_op_id, actor_id, action, status, base_version, new_version, patch, block,
                        result - 'server_seq' as result from app.block_operations order by canvas_id, canvas_seq`,
    outbox: `select block_id, canvas_id from app.embedding_outbox order by 1`,
    progress: `select v1_canvas_id, canvas_id, workspace_id, workspace_per, blocks, embedded, queued, checksum from app.upgrade_v1_progress order by 1`,
    audit: `select entity_id, details - 'first_server_seq' - 'last_server_seq' as details from app.system_audit where action = 'canvas.upgrade_v1' order by 1`,
  };
  const out: Record<string, string> = {};
  for (const [name, query] of Object.entries(parts)) {
    const [row] = await sql.unsafe(`select count(*)::int as n, md5(coalesce(string_agg(row_to_json(x)::text, E'\\n'), '')) as h from (${query}) x`);
    out[name] = `${row!.n} rows ${row!.h}`;
  }
  return out;
}

beforeAll(async () => {
  for (const name of Object.values(db)) {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    if (name !== db.v1) {
      await admin.unsafe(`create database ${name}`);
      const sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
      try { await migrate(sql, { root: repoRoot }); } finally { await sql.end(); }
    }
  }
  await writePostgresFixture(urlOf(db.v1), generateFixture({ blocks: BLOCKS, canvases: CANVASES, embedded: EMBEDDED, seed: 7 }, false));
  await writeSqliteFixture(sqlitePath, generateFixture({ blocks: BLOCKS, canvases: CANVASES, embedded: EMBEDDED, seed: 8 }, true), { force: true });
}, 60_000);

afterAll(async () => {
  for (const s of conns) await s.end({ timeout: 5 });
  for (const name of Object.values(db)) await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
  rmSync(sqlitePath, { force: true });
  rmSync(`${sqlitePath}-wal`, { force: true });
  rmSync(`${sqlitePath}-shm`, { force: true });
});

describe('npm run upgrade:v1', () => {
  it('dry run: reports what would move and what cannot, writes nothing', async () => {
    const { counts, ok, verification, lines } = await upgrade({ from: urlOf(db.v1), to: urlOf(db.a), dryRun: true });
    expect(ok).toBe(true);
    expect(verification).toBeNull();
    expect(counts.get('canvases')).toBe(CANVASES);
    expect(counts.get('blocks')).toBe(BLOCKS);
    expect(counts.get('operations')).toBe(BLOCKS);
    // the fixture's anomalies, each counted
    expect(counts.get('blocks.canvas_missing')).toBe(4);
    expect(counts.get('blocks.parent_not_on_canvas')).toBe(2);
    expect(counts.get('blocks.parent_cycle')).toBe(1);
    expect(counts.get('embeddings.missing_block')).toBe(2);
    expect(counts.get('embeddings.dimensions')).toBe(3);
    expect(counts.get('embeddings.non_finite')).toBe(1);
    expect(counts.get('users.email_duplicate')).toBe(1);
    expect(counts.get('canvases.owner_missing')).toBe(2);
    expect(counts.get('canvases.empty')).toBe(1);
    expect(lines).toContain('cannot move:');
    expect(lines.some((l) => /^\s+4 {2}blocks of missing canvases: not moved$/.test(l))).toBe(true);
    const a = connect(db.a);
    const [row] = await a`select (select count(*) from app.blocks)::int as blocks, (select count(*) from auth.users)::int as users,
                                 (select count(*) from app.upgrade_v1_progress)::int as progress`;
    expect(row).toEqual({ blocks: 0, users: 0, progress: 0 });
  });

  it('a Postgres v1 database upgrades with 0 differences; v2 keys keep v1 order (y_order, then id)', async () => {
    const { ok, verification, counts } = await upgrade({ from: urlOf(db.v1), to: urlOf(db.a) });
    expect(verification!.lines.at(-1)).toBe('verify: 0 differences');
    expect(ok).toBe(true);
    expect(counts.get('canvases')).toBe(CANVASES);
    const a = connect(db.a);
    const v1 = connect(db.v1);
    // independently of the verifier: per canvas, v2's key order is v1's (y_order nulls last, id) order
    const v1Rows = await v1<{ canvas_id: string; block_id: string }[]>`
      select b.canvas_id::text, b.block_id::text from "Blocks" b where exists (select from "Canvas" c where c.canvas_id = b.canvas_id)
      order by b.canvas_id, b.y_order nulls last, b.block_id::text collate "C"`;
    const v2Rows = await a<{ canvas_id: string; block_id: string }[]>`
      select canvas_id::text, block_id::text from app.blocks order by canvas_id, y_order`;
    expect(v2Rows.map((r) => `${r.canvas_id} ${r.block_id}`)).toEqual(v1Rows.map((r) => `${r.canvas_id} ${r.block_id}`));
    const [s] = await a`
      select (select max(length(y_order)) from app.blocks) as longest,
             (select count(*) from app.blocks where version <> 1)::int as not_v1,
             (select count(*) from app.block_operations where status = 'success' and action = 'create')::int as creates,
             (select count(*) from app.canvases where last_canvas_seq <> (select count(*) from app.blocks b where b.canvas_id = canvases.canvas_id))::int as bad_watermarks,
             (select count(*) from app.blocks where vector is not null)::int as vectors,
             (select count(*) from app.embedding_outbox)::int as queued,
             (select count(*) from app.system_audit where action = 'canvas.upgrade_v1')::int as audits`;
    expect(s).toEqual({
      longest: 2, not_v1: 0, creates: BLOCKS, bad_watermarks: 0, vectors: counts.get('embeddings.moved'),
      queued: BLOCKS - counts.get('embeddings.moved'), audits: CANVASES,
    });
    // ids kept
    const [u] = await v1`select user_id::text as id from "Users" order by created_at limit 1`;
    expect((await a`select email from auth.users where id = ${u!.id}`)[0]?.email).toBe('user0@v1.example');
  });

  it('after a worker embedded queued blocks (with text, and without: no vector), --verify-only still finds 0 differences', async () => {
    const a = connect(db.a);
    const queued = await a<{ block_id: string; content: unknown }[]>`
      select b.block_id::text, b.content from app.blocks b join app.embedding_outbox o using (block_id) order by b.block_id`;
    const textless = queued.filter((b) => blockText(b.content) === '');
    const withText = queued.filter((b) => blockText(b.content) !== '').slice(0, 3);
    expect(textless.length).toBeGreaterThan(0); // the fixture's anomalies: content null, a string, an array
    const ids = [...textless, ...withText].map((b) => b.block_id);
    // the later tests compare this database with another: put the embedding columns back after
    const before = await a`select block_id, vector, embedded_hash, embedding_model, embedded_at from app.blocks where block_id = any(${ids}::uuid[])`;
    try {
      const ctx = { sql: a, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 }) };
      for (const b of textless) expect(await embedBlock(ctx, b.block_id)).toBe('empty');
      for (const b of withText) expect(await embedBlock(ctx, b.block_id)).toBe('embedded');
      const { ok, verification } = await upgrade({ from: urlOf(db.v1), to: urlOf(db.a), verifyOnly: true });
      expect(verification!.lines.at(-1)).toBe('verify: 0 differences');
      expect(verification!.lines.join('\n')).toContain(`${ids.length} embedded since by a worker`);
      expect(ok).toBe(true);
    } finally {
      for (const r of before) {
        await a`update app.blocks set vector = ${r.vector}, embedded_hash = ${r.embedded_hash}, embedding_model = ${r.embedding_model},
          embedded_at = ${r.embedded_at} where block_id = ${r.block_id}`;
      }
    }
  });

  it('killed halfway (SIGKILL) and run again, it ends exactly where an uninterrupted run ends', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/upgrade-v1.ts', '--from', urlOf(db.v1), '--to', urlOf(db.b),
      '--batch', '250', '--no-verify'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let killedAt = -1;
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = [...out.matchAll(/upgrade: ([\d,]+) of [\d,]+ v1 blocks/g)].at(-1);
      if (killedAt < 0 && m && Number(m[1]!.replace(/,/g, '')) >= 3000) { killedAt = Number(m[1]!.replace(/,/g, '')); child.kill('SIGKILL'); }
    });
    child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
    expect(signal, out).toBe('SIGKILL');
    expect(killedAt).toBeLessThan(BLOCKS);
    const b = connect(db.b);
    const [partial] = await b`select count(*)::int as n from app.upgrade_v1_progress`;
    expect(partial!.n).toBeGreaterThan(0);
    expect(partial!.n).toBeLessThan(CANVASES);
    // every canvas in v2 is complete: the one in flight was rolled back with its transaction
    const [incomplete] = await b`select count(*)::int as n from app.canvases c where not exists
      (select from app.upgrade_v1_progress p where p.canvas_id = c.canvas_id)`;
    expect(incomplete!.n).toBe(0);

    const again = await upgrade({ from: urlOf(db.v1), to: urlOf(db.b) });
    expect(again.verification!.lines.at(-1)).toBe('verify: 0 differences');
    expect(again.counts.get('canvases.already_upgraded')).toBe(partial!.n);
    expect(again.counts.get('canvases')).toBe(CANVASES - partial!.n);
    expect(await digest(b)).toEqual(await digest(connect(db.a)));

    // and a third run changes nothing
    const third = await upgrade({ from: urlOf(db.v1), to: urlOf(db.b), verify: false });
    expect(third.counts.get('canvases')).toBe(0);
    expect(third.counts.get('users')).toBe(0);
    expect(await digest(b)).toEqual(await digest(connect(db.a)));
  }, 60_000);

  it('a run whose lock session is killed stops before another canvas; one whose write is killed names the canvas it rolled back; run again, it ends where an uninterrupted run ends', async () => {
    const c = connect(db.c);
    const upgradeSessions = (extra: string) => c.unsafe(`select pid from pg_stat_activity where datname = '${db.c}'
      and application_name = 'potentia-upgrade-v1' ${extra}`);
    // the lock's session (idle, holding it) killed once 2,000 blocks are in: before, the run went on
    // without it, and a second run could start beside it
    let killing: Promise<unknown> | null = null;
    const lockLost = await runUpgrade({ from: urlOf(db.v1), to: urlOf(db.c), batch: 250, verify: false, log: (l) => {
      const m = /upgrade: ([\d,]+) of/.exec(l);
      if (!killing && m && Number(m[1]!.replace(/,/g, '')) >= 2000) {
        killing = upgradeSessions("and query like '%pg_try_advisory_lock%'").then((rows) => c`select pg_terminate_backend(${rows[0]!.pid})`);
      }
    } }).then(() => null, (e: Error) => e);
    expect(lockLost?.message).toMatch(/^canvas \S+ \([\d,]+ blocks\), in flight: this run's advisory lock on the v2 database ended with its session \(pid \d+, /);
    const [partial] = await c`select count(*)::int as n from app.upgrade_v1_progress`;

    // a canvas's write killed while it waits (for a lock this test holds): its statement's own error
    let release!: () => void;
    const held = c.begin(async (tx) => {
      await tx`lock table app.upgrade_v1_progress in share mode`;
      await new Promise<void>((resolve) => { release = resolve; });
    });
    const killedWrite = upgrade({ from: urlOf(db.v1), to: urlOf(db.c), batch: 250, verify: false }).then(() => null, (e: Error) => e);
    for (let rows = []; rows.length === 0; await new Promise((r) => setTimeout(r, 50))) {
      rows = await upgradeSessions("and wait_event_type = 'Lock'");
      if (rows.length > 0) await c`select pg_terminate_backend(${rows[0]!.pid})`;
    }
    release();
    await held;
    // the server's words, or the socket's when its reset came first
    expect((await killedWrite)?.message).toMatch(/^canvas \S+ \([\d,]+ blocks\), in flight: (terminating connection due to administrator command|read ECONNRESET)$/);
    const [after] = await c`select count(*)::int as n, (select count(*)::int from app.canvases) as canvases from app.upgrade_v1_progress`;
    expect(after).toEqual({ n: partial!.n, canvases: partial!.n }); // the killed canvas left nothing

    const again = await upgrade({ from: urlOf(db.v1), to: urlOf(db.c) });
    expect(again.verification!.lines.at(-1)).toBe('verify: 0 differences');
    expect(await digest(c)).toEqual(await digest(connect(db.a)));
  }, 60_000);

  it('a workspace id a v2 user created first is not adopted: no v1 member or canvas goes into it, the run reports it and verify flags it; deleted, a re-run moves the rest', async () => {
    const sq = connect(db.sq);
    const v1 = connect(db.v1);
    // the upgrade's workspace ids are name-based (UUID version 5) in a public namespace: anyone can
    // compute an owner's (and the unowned one). api.create_workspace refuses such ids (it takes
    // random ones, version 4 or 7: internal.check_client_id), so a signed-in v2 user cannot create
    // one first; a workspace written under one another way (by hand, or before that rule) must
    // still not be adopted
    const [o] = await v1<{ id: string; canvases: number }[]>`
      select c.owner_id::text as id, count(*)::int as canvases from "Canvas" c join "Users" u on u.user_id = c.owner_id
      group by 1 order by 1 limit 1`;
    const ownerWs = workspaceIdFor.owner(o!.id);
    const unownedWs = workspaceIdFor.unowned();
    const squatter = await createUser(sq, 'squatter');
    await expect(callAs(sq, squatter, 'create_workspace', ['mine', ownerWs])).rejects
      .toMatchObject({ hint: 'invalid_input', detail: expect.stringContaining('workspace_id') });
    const written = (id: string, name: string, creator: string, members: [string, string][]) => sq.begin(async (tx) => {
      await tx`insert into app.workspaces (workspace_id, name, created_by) values (${id}, ${name}, ${creator})`;
      for (const [user, role] of members) await tx`insert into app.workspace_members (workspace_id, user_id, role) values (${id}, ${user}, ${role})`;
    });
    await written(ownerWs, 'mine', squatter, [[squatter, 'owner']]);
    // the unowned one (created_by null in the plan): its creator added somebody, then was deleted
    // (created_by is set null): the plan's creator, but a member the plan does not have
    const gone = await createUser(sq, 'gone');
    const accomplice = await createUser(sq, 'accomplice');
    await written(unownedWs, 'mine too', gone, [[gone, 'owner'], [accomplice, 'editor']]);
    await sq`delete from auth.users where id = ${gone}`;
    const inSquatted = o!.canvases + 2; // the fixture's first two canvases have no (known) owner

    const dry = await upgrade({ from: urlOf(db.v1), to: urlOf(db.sq), dryRun: true });
    expect(dry.counts.get('workspaces.workspace_id_taken')).toBe(2);
    expect(dry.counts.get('canvases.workspace_id_taken')).toBe(inSquatted);

    const run = await upgrade({ from: urlOf(db.v1), to: urlOf(db.sq) });
    expect(run.counts.get('workspaces.workspace_id_taken')).toBe(2);
    expect(run.counts.get('canvases.workspace_id_taken')).toBe(inSquatted);
    expect(run.counts.get('canvases')).toBe(CANVASES - inSquatted);
    expect(run.lines.some((l) => /^\s+2 {2}workspaces whose id v2 already uses/.test(l))).toBe(true);
    // the run names each id, why, and says what to do next
    for (const [id, why] of [[ownerWs, `created_by ${squatter}, the upgrade's would be ${o!.id}`], [unownedWs, `member the upgrade would not add: ${accomplice}`]] as const) {
      expect(run.lines.some((l) => l.includes(`workspace ${id} `) && l.includes(why) &&
        l.includes(`delete from app.workspaces where workspace_id = '${id}'`) && l.includes('run the same command again'))).toBe(true);
    }
    const squatted = await sq<{ workspace_id: string; name: string; members: string[]; canvases: number }[]>`
      select w.workspace_id::text, w.name,
             (select array_agg(m.user_id::text || ':' || m.role order by m.user_id) from app.workspace_members m where m.workspace_id = w.workspace_id) as members,
             (select count(*)::int from app.canvases c where c.workspace_id = w.workspace_id) as canvases
      from app.workspaces w where w.workspace_id in (${ownerWs}, ${unownedWs}) order by w.name`;
    expect(squatted).toEqual([
      { workspace_id: ownerWs, name: 'mine', members: [`${squatter}:owner`], canvases: 0 },
      { workspace_id: unownedWs, name: 'mine too', members: [`${accomplice}:editor`], canvases: 0 },
    ]);
    const [moved] = await sq<{ n: number }[]>`select count(*)::int as n from app.upgrade_v1_progress where workspace_id in (${ownerWs}, ${unownedWs})`;
    expect(moved!.n).toBe(0);
    // verify: the creator is not the plan's, a member the plan does not have, the canvases missing
    expect(run.ok).toBe(false);
    const diffs = run.verification!.lines;
    expect(diffs.some((l) => l.startsWith(`difference: workspace ${ownerWs} (`) &&
      l.endsWith(`: created_by ${squatter} (expected ${o!.id}): not written by this upgrade`))).toBe(true);
    expect(diffs).toContain(`difference: workspace ${ownerWs}: member ${squatter} as owner is not a planned member`);
    expect(diffs).toContain(`difference: workspace ${ownerWs}: member ${o!.id} as owner is missing`);
    expect(diffs).toContain(`difference: workspace ${unownedWs}: member ${accomplice} as editor is not a planned member`);

    // the operator deletes the squatted workspaces and runs the same command again
    await sq`delete from app.workspaces where workspace_id in (${ownerWs}, ${unownedWs})`;
    const again = await upgrade({ from: urlOf(db.v1), to: urlOf(db.sq) });
    expect(again.verification!.lines.at(-1)).toBe('verify: 0 differences');
    expect(again.counts.get('canvases')).toBe(inSquatted);
    expect(again.counts.get('canvases.already_upgraded')).toBe(CANVASES - inSquatted);
    expect(again.counts.get('workspaces.workspace_id_taken')).toBe(0);
  }, 90_000);

  it('a SQLite (Prisma) v1 file upgrades with 0 differences, into one workspace', async () => {
    const { ok, verification, counts } = await upgrade({ from: sqlitePath, to: urlOf(db.lite), workspacePer: 'one' });
    expect(verification!.lines.at(-1)).toBe('verify: 0 differences');
    expect(ok).toBe(true);
    // what only a SQLite v1 can hold
    expect(counts.get('blocks.id_mapped')).toBeGreaterThan(0);
    expect(counts.get('canvases.id_mapped')).toBe(1);
    expect(counts.get('blocks.content_invalid_json')).toBe(1);
    expect(counts.get('blocks.content_nul_removed')).toBe(1);
    expect(counts.get('embeddings.unparseable')).toBe(1);
    const lite = connect(db.lite);
    const [w] = await lite`select count(distinct workspace_id)::int as workspaces, (select count(*) from app.workspace_members)::int as members
                           from app.canvases`;
    expect(w).toEqual({ workspaces: 1, members: counts.get('users') });
  }, 60_000);

  it('a v1 or v2 database that cannot be opened is named by its option', async () => {
    await expect(upgrade({ from: join(tmpdir(), `${prefix}-missing.sqlite`), to: urlOf(db.lite), dryRun: true }))
      .rejects.toThrow(new RegExp(`^--from .*${prefix}-missing\\.sqlite: `));
    await expect(upgrade({ from: urlOf(`${prefix}_missing`), to: urlOf(db.lite), dryRun: true }))
      .rejects.toThrow(new RegExp(`^--from postgres .*/${prefix}_missing: database "${prefix}_missing" does not exist`));
    await expect(upgrade({ from: sqlitePath, to: urlOf(`${prefix}_missing`), dryRun: true }))
      .rejects.toThrow(new RegExp(`^--to postgres .*/${prefix}_missing: database "${prefix}_missing" does not exist`));
  });

  it('verification exits non-zero on any difference', async () => {
    const lite = connect(db.lite);
    await lite`update app.blocks set content = content || '{"edited": true}'
               where block_id = (select block_id from app.blocks order by block_id limit 1)`;
    await lite`update app.blocks set y_order = case y_order when 'V' then 'W' else y_order end
               where canvas_id = (select canvas_id from app.blocks where y_order = 'V' order by canvas_id limit 1)
                 and y_order = 'V' and not exists (select from app.blocks b2 where b2.canvas_id = blocks.canvas_id and b2.y_order = 'W')`;
    const { ok, verification } = await upgrade({ from: sqlitePath, to: urlOf(db.lite), workspacePer: 'one', verifyOnly: true });
    expect(ok).toBe(false);
    expect(verification!.differences).toBeGreaterThanOrEqual(1);
    expect(verification!.lines.some((l) => l.startsWith('difference: ') && l.includes('checksum differs'))).toBe(true);
  }, 60_000);

  describe('the upgraded database serves the API', () => {
    let server: Server;
    beforeAll(async () => { server = await startTestServer({ databaseUrl: urlOf(db.a), directDatabaseUrl: urlOf(db.a) }); });
    afterAll(async () => { await server?.stop(); });

    it('a snapshot over HTTP, then a mutation of an upgraded block gets canvas_seq n + 1', async () => {
      const a = connect(db.a);
      const [c] = await a<{ canvas_id: string; owner: string; n: number }[]>`
        select c.canvas_id::text, c.created_by::text as owner, c.last_canvas_seq::int as n from app.canvases c
        where c.created_by is not null order by c.last_canvas_seq desc limit 1`;
      const token = await tokenFor(server, c!.owner);
      const snap = await fetch(`${server.url}/api/v1/canvas/${c!.canvas_id}/snapshot`, { headers: { authorization: `Bearer ${token}` } });
      expect(snap.status).toBe(200);
      const body = await snap.json() as { blocks: { block_id: string; version: number }[]; canvas_watermark: number };
      expect(body.canvas_watermark).toBe(c!.n);
      const order = await a<{ id: string }[]>`select block_id::text as id from app.blocks where canvas_id = ${c!.canvas_id} order by y_order`;
      expect(body.blocks.map((b) => b.block_id)).toEqual(order.map((r) => r.id));

      const target = body.blocks[Math.floor(body.blocks.length / 2)]!;
      const res = await fetch(`${server.url}/api/v1/canvas/${c!.canvas_id}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'update', block_id: target.block_id, client_op_id: 'after-upgrade-1', base_version: 1,
                               patch: { content: { edited_after_upgrade: true } } }),
      });
      const result = await res.json() as { status: string; canvas_seq: number; version: number };
      expect(res.status, JSON.stringify(result)).toBe(200);
      expect(result).toMatchObject({ status: 'success', canvas_seq: c!.n + 1, version: 2 });
      // replay from the start: the upgrade's creates (canvas_seq 1..n, each block once, parents first), then the edit
      await new Promise((r) => setTimeout(r, 1100)); // H4 answers one snapshot a second per user
      const replay = await fetch(`${server.url}/api/v1/canvas/${c!.canvas_id}/snapshot?since_seq=0`, { headers: { authorization: `Bearer ${token}` } });
      expect(replay.status).toBe(200);
      const { since } = await replay.json() as { since: { changes: { canvas_seq: number; action: string; block_id: string; block: { parent_id: string | null } }[] } };
      expect(since.changes.map((ch) => ch.canvas_seq)).toEqual(Array.from({ length: c!.n + 1 }, (_, i) => i + 1));
      expect(since.changes.slice(0, c!.n).every((ch) => ch.action === 'create')).toBe(true);
      expect(new Set(since.changes.slice(0, c!.n).map((ch) => ch.block_id))).toEqual(new Set(body.blocks.map((b) => b.block_id)));
      const created = new Set<string>();
      for (const ch of since.changes.slice(0, c!.n)) {
        if (ch.block.parent_id !== null) expect(created.has(ch.block.parent_id)).toBe(true);
        created.add(ch.block_id);
      }
      expect(since.changes.at(-1)).toMatchObject({ action: 'update', block_id: target.block_id, canvas_seq: c!.n + 1 });
    });

    it('a v1 user signs in with the v1 password (bcrypt hash carried over)', async () => {
      const { anon } = await apiKeys(server.deps.config);
      const res = await fetch(`${server.url}/auth/v1/token?grant_type=password`, {
        method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'user0@v1.example', password: FIXTURE_PASSWORD }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      expect((await res.json() as { user: { email: string } }).user.email).toBe('user0@v1.example');
    });
  });
});

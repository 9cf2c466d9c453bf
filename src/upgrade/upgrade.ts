// The v1 → v2 upgrade (npm run upgrade:v1; docs/upgrade-v1.md): reads a v1 database, plans it
// (v1-plan.ts), then either reports what would move (dry run) or writes it canvas by canvas
// (v1-write.ts) and verifies the result against v1 (v1-verify.ts).
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import postgres, { type Sql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import { Counts, planCanvasBlocks, planUsers, planWorkspaces, type PlannedCanvas, type WorkspacePer } from './v1-plan.ts';
import { formatReport } from './v1-report.ts';
import { postgresLabel } from '../url-redaction.ts';
import { openPostgresSource } from './v1-source-postgres.ts';
import { openSqliteSource } from './v1-source-sqlite.ts';
import type { V1Block, V1Source } from './v1-shape.ts';
import { verifyUpgrade, type VerifyResult } from './v1-verify.ts';
import {
  canvasCollision, emailsTakenInTarget, takenWorkspaceLine, UPGRADE_LOCK_KEY, workspacesTaken, writeCanvas, writeUsers, writeWorkspaces,
  type CanvasWriteResult, type TakenWorkspace,
} from './v1-write.ts';

export type UpgradeOptions = {
  /** a postgres:// URL, or the path of a SQLite file */
  from: string;
  /** the v2 database (direct connection, not a transaction pooler: the run holds a session advisory lock) */
  to: string;
  dryRun?: boolean;
  verifyOnly?: boolean;
  /** verify after writing (default true) */
  verify?: boolean;
  /** rows per insert statement, and blocks between progress lines (default 1000) */
  batch?: number;
  workspacePer?: WorkspacePer;
  workspaceName?: string;
  /** schema of the v1 tables in a Postgres source (default public) */
  schema?: string;
  log?: (line: string) => void;
};

export type UpgradeResult = { counts: Counts; verification: VerifyResult | null; ok: boolean };

export const isPostgresUrl = (s: string) => /^postgres(ql)?:\/\//i.test(s);

export function openSource(from: string, schema?: string): Promise<V1Source> {
  return isPostgresUrl(from) ? openPostgresSource(from, schema) : openSqliteSource(from);
}

const fmt = (n: number) => n.toLocaleString('en-US');

async function checkTarget(sql: Sql): Promise<void> {
  const [row] = await sql`select to_regclass('app.blocks') is not null as blocks, to_regclass('app.upgrade_v1_progress') is not null as progress`;
  if (!row?.blocks || !row.progress) {
    throw new Error('the target is not a migrated v2 database (app.upgrade_v1_progress is missing): ' +
      'run npm run db:migrate -- --database-url <the --to URL> first (without it, npm run db:migrate migrates DATABASE_URL)');
  }
}

/** An error raised before the run wrote anything (a dry run, --verify-only, or a check before the first write). */
export type UpgradeError = Error & { nothingWritten?: true };
function nothingWritten(err: Error): UpgradeError {
  return Object.assign(err, { nothingWritten: true as const });
}

export async function runUpgrade(opts: UpgradeOptions): Promise<UpgradeResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const batch = Math.max(1, opts.batch ?? 1000);
  const per = opts.workspacePer ?? 'owner';
  // a database that cannot be opened is named, --from or --to: "database … does not exist" alone
  // does not say which of the two it is
  if (!isPostgresUrl(opts.from) && !existsSync(opts.from)) {
    // better-sqlite3 says only "unable to open database file"; npm run starts in the repository
    // root, so a path relative to the reader's directory is looked for there
    throw nothingWritten(new Error(`--from ${opts.from}: no such file (looked for ${resolve(opts.from)}` +
      (isAbsolute(opts.from) ? ')' : ': npm run starts in the repository root, so give an absolute path)') + ' (the v1 database: a postgres:// URL or a SQLite file)'));
  }
  const source = await openSource(opts.from, opts.schema).catch((err: Error) => {
    throw nothingWritten(new Error(`--from ${isPostgresUrl(opts.from) ? postgresLabel(opts.from) : opts.from}: ${err.message} (the v1 database: a postgres:// URL or a SQLite file)`, { cause: err }));
  });
  const target = postgres(opts.to, { max: 3, onnotice: () => {}, connection: { application_name: 'potentia-upgrade-v1' } });
  let lock: Awaited<ReturnType<Sql['reserve']>> | null = null;
  let lockPid: number | undefined;
  let writing = false;
  try {
    await target`select 1`.catch((err: Error) => {
      throw new Error(`--to ${postgresLabel(opts.to)}: ${err.message} (the v2 database, migrated by npm run db:migrate)`, { cause: err });
    });
    await checkTarget(target);
    const counts = new Counts();
    const users = planUsers(await source.users(), counts);
    const { workspaces, canvases } = planWorkspaces(users, await source.canvases(), per, counts, opts.workspaceName);
    const plan = { users, workspaces, canvases };
    const mode = opts.verifyOnly ? 'verify' : opts.dryRun ? 'dry run' : 'upgrade';
    log(`upgrade:v1 ${mode}: ${source.label} → ${postgresLabel(opts.to)} (workspace per ${per}, batch ${batch})`);

    const done = await target<{ workspace_per: string; n: number }[]>`
      select workspace_per, count(*)::int as n from app.upgrade_v1_progress group by 1`;
    const other = done.find((d) => d.workspace_per !== per);
    if (other) {
      throw new Error(`this database was upgraded with --workspace-per ${other.workspace_per} (${other.n} canvases): run again with the same`);
    }
    const emailsTaken = await emailsTakenInTarget(target, users);
    for (const u of users) if (u.email !== null && emailsTaken.has(u.email)) { counts.add('users.email_taken'); u.email = null; }

    let taken: TakenWorkspace[] = [];
    if (opts.verifyOnly) {
      const verification = await verifyUpgrade(target, source, plan, log);
      verification.lines.forEach((l) => log(l));
      return { counts, verification, ok: verification.differences === 0 };
    }

    if (opts.dryRun) {
      const [u] = await target<{ n: number }[]>`select count(*)::int as n from auth.users where id = any(${users.map((x) => x.id)}::uuid[])`;
      counts.add('users', users.length - u!.n);
      counts.add('users.already_present', u!.n);
      const [w] = await target<{ n: number }[]>`select count(*)::int as n from app.workspaces where workspace_id = any(${workspaces.map((x) => x.id)}::uuid[])`;
      taken = await workspacesTaken(target, workspaces);
      counts.add('workspaces', workspaces.length - w!.n);
    } else {
      writing = true;
      lock = await target.reserve();
      const [got] = await lock<{ ok: boolean; pid: number }[]>`select pg_try_advisory_lock(hashtext(${UPGRADE_LOCK_KEY})) as ok, pg_backend_pid() as pid`;
      if (!got?.ok) throw new Error('another npm run upgrade:v1 is writing to this database (advisory lock held)');
      lockPid = got.pid;
      const inserted = await writeUsers(target, users, batch);
      counts.add('users', inserted);
      counts.add('users.already_present', users.length - inserted);
      const ws = await writeWorkspaces(target, workspaces, batch);
      counts.add('workspaces', ws.inserted);
      taken = ws.taken;
      log(`upgrade: users ${fmt(inserted)} inserted (${fmt(users.length - inserted)} already there), workspaces ready` +
        (taken.length > 0 ? ` (${fmt(taken.length)} taken: see below)` : ''));
    }
    // a planned workspace whose id v2 already uses for a row the upgrade did not write: reported,
    // like a taken canvas id; its members are not added and its canvases do not move (canvasCollision)
    counts.add('workspaces.workspace_id_taken', taken.length);
    const canvasesIn = new Map<string, number>();
    for (const c of canvases) canvasesIn.set(c.workspaceId, (canvasesIn.get(c.workspaceId) ?? 0) + 1);
    for (const t of taken) log(`${opts.dryRun ? 'dry run' : 'upgrade'}: ${takenWorkspaceLine(t, canvasesIn.get(t.id) ?? 0)}`);

    const creatorOf = new Map(workspaces.map((w) => [w.id, w.createdBy]));
    const userIds = new Map(users.map((u) => [u.v1Id, u.id]));
    const byV1 = new Map(canvases.map((c) => [c.v1Id, c]));
    const totalBlocks = await source.blockCount();
    const started = monotonicNow();
    let processed = 0;
    let canvasesSeen = 0;
    let nextLine = batch;
    let lastLine = '';
    const progress = (force = false) => {
      if (!force && processed < nextLine) return;
      while (nextLine <= processed) nextLine += batch;
      const secs = (monotonicNow() - started) / 1000;
      const line = `upgrade: ${fmt(processed)} of ${fmt(totalBlocks)} v1 blocks (${totalBlocks === 0 ? 100 : Math.floor((processed * 100) / totalBlocks)}%), ` +
        `${fmt(canvasesSeen)} of ${fmt(canvases.length)} canvases`;
      if (line !== lastLine) log(`${line}, ${fmt(Math.round(processed / Math.max(secs, 0.001)))} blocks/s`);
      lastLine = line;
    };
    const takenIds = new Set(taken.map((t) => t.id));
    const handle = async (canvas: PlannedCanvas, blocks: V1Block[]) => {
      const p = planCanvasBlocks(blocks, userIds);
      // a canvas of a taken workspace is never written (already upgraded ones are still reported as such)
      const result: CanvasWriteResult | null = takenIds.has(canvas.workspaceId)
        ? ((await canvasCollision(target, canvas, p, creatorOf.get(canvas.workspaceId) ?? null)) ?? { status: 'workspace_id_taken' })
        : await (opts.dryRun
        ? canvasCollision(target, canvas, p, creatorOf.get(canvas.workspaceId) ?? null)
        : writeCanvas(target, canvas, p, { batch, workspacePer: per, lockPid, workspaceCreatedBy: creatorOf.get(canvas.workspaceId) ?? null })).catch((err: Error) => {
        // the canvas in flight is named: its transaction was rolled back, the ones before it are kept
        throw new Error(`canvas ${canvas.v1Id} (${fmt(p.blocks.length)} blocks), in flight: ${err.message}`, { cause: err });
      });
      if (result === null || result.status === 'written') {
        counts.merge(p.counts);
        counts.add('canvases');
        counts.add('operations', p.blocks.length);
        if (p.blocks.length === 0) counts.add('canvases.empty');
      } else {
        counts.add(`canvases.${result.status}`);
      }
      canvasesSeen++;
      processed += blocks.length;
      progress();
    };
    const seen = new Set<string>();
    for await (const group of source.blocksByCanvas()) {
      const canvas = byV1.get(group.canvasId);
      if (!canvas) {
        counts.add('blocks.canvas_missing', group.blocks.length);
        processed += group.blocks.length;
        progress();
        continue;
      }
      seen.add(canvas.v1Id);
      await handle(canvas, group.blocks);
    }
    for (const canvas of canvases) if (!seen.has(canvas.v1Id)) await handle(canvas, []);
    progress(true);
    counts.add('embeddings.missing_block', await source.embeddingsOfMissingBlocks());
    // fresh statistics after a bulk load: without them the planner keeps the plans of empty
    // tables until autovacuum comes by (the verification's per-canvas reads among them)
    if (!opts.dryRun) await target`analyze auth.users, app.canvases, app.blocks, app.block_operations, app.embedding_outbox`;

    formatReport(counts, opts.dryRun ? `dry run: nothing was written (${((monotonicNow() - started) / 1000).toFixed(1)} s)`
      : `upgrade done in ${((monotonicNow() - started) / 1000).toFixed(1)} s`, opts.dryRun ? 'would move' : 'moved').forEach((l) => log(l));
    if (opts.dryRun || opts.verify === false) return { counts, verification: null, ok: true };

    const verifyStarted = monotonicNow();
    const verification = await verifyUpgrade(target, source, plan, log);
    verification.lines.forEach((l) => log(l));
    log(`verify: took ${((monotonicNow() - verifyStarted) / 1000).toFixed(1)} s`);
    return { counts, verification, ok: verification.differences === 0 };
  } catch (err) {
    throw writing ? err : nothingWritten(err as Error);
  } finally {
    if (lock) {
      await lock`select pg_advisory_unlock(hashtext(${UPGRADE_LOCK_KEY}))`.catch(() => {});
      lock.release();
    }
    await source.close();
    await target.end({ timeout: 5 });
  }
}

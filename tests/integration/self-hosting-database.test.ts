import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateCluster, serverBindir } from '../../scripts/lib/private-cluster.ts';

// docs/self-hosting.md's commands for a database of its own role, run as written on private
// clusters: "Database" (the superuser's one-time setup, then `npm run db:migrate` as that role),
// then "Backup and restore" (pg_dump, and the restore into a new cluster: roles, the database with its settings,
// pg_restore, `db:migrate --strict` up to date). Only the servers differ: ADMIN_URL,
// DIRECT_DATABASE_URL and libpq's PGHOST/PGPORT point at the clusters. As first written, the
// restore ran pg_restore as the database's role and stopped at CREATE EXTENSION vector.

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const doc = readFileSync(join(root, 'docs/self-hosting.md'), 'utf8');
const clusters: PrivateCluster[] = [];
const dump = join(root, 'potentia.dump'); // the blocks run where the doc runs them: the checkout (.gitignore'd)

/** The first ```sh block after `marker` in docs/self-hosting.md, without the list's indentation. */
function shBlockAfter(marker: string): string {
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`docs/self-hosting.md no longer has "${marker}"`);
  const block = /^( *)```sh\n([\s\S]*?)^\1```/m.exec(doc.slice(at));
  if (!block) throw new Error(`no sh block after "${marker}"`);
  return block[2]!.split('\n').map((l) => l.slice(block[1]!.length)).join('\n');
}

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as { port: number }; s.close(() => resolve(port)); });
});

async function newCluster(): Promise<PrivateCluster> {
  const cluster = PrivateCluster.create(serverBindir(), await freePort());
  clusters.push(cluster);
  await cluster.start();
  return cluster;
}

/** Runs a doc block with bash against `cluster` (ADMIN_URL its superuser). */
async function bash(script: string, cluster: PrivateCluster, env: Record<string, string> = {}): Promise<string> {
  const { stdout, stderr } = await run('bash', ['-e', '-o', 'pipefail', '-c', script], {
    cwd: root, timeout: 120_000,
    // libpq's defaults lead nowhere: every command must name its server, as a reader's would have to
    // (the restore's createdb named none and reached whatever server the local socket had, as the OS user)
    env: { ...process.env, ADMIN_URL: cluster.url('postgres'), PGHOST: '/nonexistent', PGPORT: '1', PGUSER: 'nobody', ...env },
  }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
    throw new Error(`a docs/self-hosting.md block failed:\n${script}\n${err.stdout ?? ''}${err.stderr ?? err.message}`);
  });
  return stdout + stderr;
}

const roleUrl = (cluster: PrivateCluster) => cluster.url('potentia').replace('postgres://postgres@', 'postgres://potentia:CHANGE_ME@');

async function counts(url: string): Promise<Record<string, number>> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select (select count(*) from auth.users)::int as users, (select count(*) from app.canvases)::int as canvases,
                                   (select count(*) from app.blocks)::int as blocks, (select count(*) from app.block_operations)::int as operations`;
    return { ...row };
  } finally {
    await sql.end();
  }
}

afterAll(async () => {
  for (const c of clusters) await c.destroy();
  rmSync(dump, { force: true });
});

describe('docs/self-hosting.md, a database of its own role', () => {
  it('the superuser setup, migrations as the role, a dump, and the restore into a new cluster run as written', async () => {
    const first = await newCluster();
    await bash(shBlockAfter('a superuser prepares the cluster and the database once'), first);
    const migrated = await bash('npm run db:migrate -- --strict', first, { DATABASE_URL: roleUrl(first) });
    expect(migrated).toMatch(/migrate potentia: \d+ step\(s\) applied/);
    // something to carry over: the demo user, workspace, canvas, and a block made through the RPC
    await bash(`psql "${first.url('potentia')}" -X -q -v ON_ERROR_STOP=1 -f ${join(root, 'supabase/seed.sql')}`, first);
    await bash(`psql "${roleUrl(first)}" -X -q -v ON_ERROR_STOP=1 <<'SQL'
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-00000000d001","role":"authenticated"}', true);
select api.upsert_block_atomic('00000000-0000-4000-8000-00000000d003', null, 'create', 'op-1', null, '{"type": "text", "content": {"text": "Hello"}}');
commit;
SQL`, first);
    const before = await counts(first.url('potentia'));
    expect(before.blocks).toBe(1);

    await bash(shBlockAfter('A logical backup of the database'), first, { DIRECT_DATABASE_URL: roleUrl(first) });
    const second = await newCluster();
    const restored = await bash(shBlockAfter('Restoring into a new cluster:'), second, { DIRECT_DATABASE_URL: roleUrl(second) });
    expect(restored).toMatch(/migrate potentia: up to date/);
    expect(await counts(second.url('potentia'))).toEqual(before);
    // the database's own settings came with it (pg_restore --create), which no migration applies again
    expect(await bash(`psql "${roleUrl(second)}" -X -qAt -c 'show client_connection_check_interval'`, second)).toBe('2s\n');
  }, 240_000);
});

import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateCluster, serverBindir } from '../../scripts/lib/private-cluster.ts';
import { loadConfig } from '../../src/config.ts';
import { assertMigrated } from '../../src/db/migrated.ts';
import { freePort } from '../helpers/free-port.ts';

// docs/self-hosting.md's commands for a database of its own role, run as written on private
// clusters: "Database" (the superuser's one-time setup, then `npm run db:migrate` as that role, the
// owner; the processes' login role potentia_runtime, which deploy/systemd/potentia.env.example's
// URLs name, passing the start check and writing through the API roles; the pg_hba.conf lines),
// then "Backup and restore" (pg_dump, and the restore into a new cluster: roles, the database with its settings,
// pg_restore, `db:migrate --strict` up to date; and into another database of the same cluster). Only the servers differ: ADMIN_URL,
// OWNER_URL and libpq's PGHOST/PGPORT point at the clusters. As first written, the
// restore ran pg_restore as the database's role and stopped at CREATE EXTENSION vector.

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const doc = readFileSync(join(root, 'docs/self-hosting.md'), 'utf8');
const clusters: PrivateCluster[] = [];
const dump = join(root, 'potentia.dump'); // the blocks run where the doc runs them: the checkout (.gitignore'd)

/** The first ```sh block (or ``` block of `lang`) after `marker` in docs/self-hosting.md, without the list's indentation. */
function shBlockAfter(marker: string, lang = 'sh'): string {
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`docs/self-hosting.md no longer has "${marker}"`);
  const block = new RegExp(`^( *)\`\`\`${lang}\n([\\s\\S]*?)^\\1\`\`\``, 'm').exec(doc.slice(at));
  if (!block) throw new Error(`no ${lang || 'plain'} block after "${marker}"`);
  return block[2]!.split('\n').map((l) => l.slice(block[1]!.length)).join('\n');
}

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

/** deploy/systemd/potentia.env.example's KEY=value lines (what systemd's EnvironmentFile reads). */
const envExample = Object.fromEntries(readFileSync(join(root, 'deploy/systemd/potentia.env.example'), 'utf8').split('\n')
  .map((line) => /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1]!, m[2]!]));

/** The env file's `name` with its server moved to `cluster` (its role, password and database kept). */
function envExampleUrl(name: 'DATABASE_URL' | 'DIRECT_DATABASE_URL', cluster: PrivateCluster): string {
  const url = new URL(envExample[name]!);
  url.hostname = '127.0.0.1';
  url.port = String(cluster.port);
  return url.toString();
}

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
    const migrated = await bash('npm run db:migrate -- --strict --database-url "$OWNER_URL"', first, { OWNER_URL: roleUrl(first) });
    expect(migrated).toMatch(/migrate potentia: \d+ step\(s\) applied/);
    // the processes' login role, made as the doc has the superuser make it, is the one the shipped
    // env file names (both URLs), and it passes the processes' start check (SchemasNotOwnedError)
    await bash(shBlockAfter('the login role:'), first);
    const runtime = envExampleUrl('DIRECT_DATABASE_URL', first);
    expect(new URL(runtime).username).toBe('potentia_runtime');
    expect(new URL(envExampleUrl('DATABASE_URL', first)).username).toBe('potentia_runtime');
    const config = loadConfig({ ...envExample, JWT_SECRET: 'x'.repeat(32), DATABASE_URL: runtime, DIRECT_DATABASE_URL: runtime });
    await expect(assertMigrated(config.databaseUrl)).resolves.toBeUndefined();
    // and it may not migrate: db:migrate names the owner to run as, and never advises granting the
    // owner to the processes' login role (which would undo the split)
    const refusal = await bash('npm run db:migrate -- --strict --database-url "$DIRECT_DATABASE_URL"', first, { DIRECT_DATABASE_URL: runtime })
      .then(() => '', (err: Error) => err.message);
    expect(refusal).toMatch(/migrate refused: the role potentia_runtime [\s\S]*cannot act as potentia[\s\S]*--database-url "\$OWNER_URL"/);
    expect(refusal).not.toMatch(/grant potentia to potentia_runtime/);
    // something to carry over: the demo user, workspace, canvas, and a block made through the RPC, as the processes make it
    await bash(`psql "${first.url('potentia')}" -X -q -v ON_ERROR_STOP=1 -f ${join(root, 'supabase/seed.sql')}`, first);
    await bash(`psql "${runtime}" -X -q -v ON_ERROR_STOP=1 <<'SQL'
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-00000000d001","role":"authenticated"}', true);
select api.upsert_block_atomic('00000000-0000-4000-8000-00000000d003', null, 'create', 'op-1', null, '{"type": "text", "content": {"text": "Hello"}}');
commit;
SQL`, first);
    const before = await counts(first.url('potentia'));
    expect(before.blocks).toBe(1);

    await bash(shBlockAfter('A logical backup of the database'), first, { OWNER_URL: roleUrl(first) });
    const second = await newCluster();
    const restored = await bash(shBlockAfter('Restoring into a new cluster:'), second, { OWNER_URL: roleUrl(second) });
    expect(restored).toMatch(/migrate potentia: up to date/);
    expect(await counts(second.url('potentia'))).toEqual(before);
    // the restore made the processes' login role too: the env file's URLs start on the new cluster
    await expect(assertMigrated(envExampleUrl('DIRECT_DATABASE_URL', second))).resolves.toBeUndefined();
    // the database's own settings came with it (pg_restore --create), which no migration applies again
    expect(await bash(`psql "${roleUrl(second)}" -X -qAt -c 'show client_connection_check_interval'`, second)).toBe('2s\n');

    // the same dump restored into another database of the first cluster (a restore test, a copy): the
    // roles are there, and the database settings, which a database made by hand lacks and no
    // migration applies again, are given by the block (as first tried, the copy had none of them)
    const copyUrl = first.url('potentia_copy');
    const copied = await bash(shBlockAfter('Restoring into another database of the same cluster'), first,
      { COPY_URL: copyUrl, COPY_DIRECT_URL: copyUrl.replace('postgres://postgres@', 'postgres://potentia:CHANGE_ME@') });
    expect(copied).toMatch(/migrate potentia_copy: up to date/);
    expect(await counts(copyUrl)).toEqual(before);
    const settings = (db: string) => bash(`psql "${first.url('postgres')}" -X -qAt -c "select array(select unnest(setconfig) order by 1)
      from pg_db_role_setting where setrole = 0 and setdatabase = (select oid from pg_database where datname = '${db}')"`, first);
    expect(await settings('potentia_copy')).toBe(await settings('potentia'));
    expect(await settings('potentia')).toMatch(/client_connection_check_interval=2s/);

    // the doc's pg_hba.conf lines (its addresses this host's, the superuser trusted as before):
    // the processes' role logs in with its password and opens its logical stream through the
    // database's line, and no line admits it to physical replication
    const hbaFile = (await bash(`psql "${first.url('postgres')}" -X -qAt -c 'show hba_file'`, first)).trim();
    const lines = shBlockAfter('the owner only from where migrations and backups run', '').replace(/\d+\.\d+\.\d+\.\d+\/\d+/g, '127.0.0.1/32');
    expect(lines).toMatch(/^host +potentia +potentia_runtime +127\.0\.0\.1\/32 +scram-sha-256$/m);
    writeFileSync(hbaFile, `local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n${lines}`);
    await bash(`psql "${first.url('postgres')}" -X -qAt -v ON_ERROR_STOP=1 -c 'select pg_reload_conf()'`, first);
    expect(await bash(`psql "${first.url('postgres')}" -X -qAt -c 'select count(*) from pg_hba_file_rules where error is not null'`, first)).toBe('0\n');
    expect(await bash(`psql "${runtime}" -X -qAt -c 'select current_user'`, first)).toBe('potentia_runtime\n');
    await expect(bash(`psql "${runtime.replace(':CHANGE_ME@', ':wrong@')}" -X -qAt -c 'select 1'`, first)).rejects.toThrow(/password authentication failed for user "potentia_runtime"/);
    expect(await bash(`psql "${runtime}?replication=database" -X -qAt -c 'IDENTIFY_SYSTEM'`, first)).toMatch(/\|potentia\n$/);
    await expect(bash(`psql "${runtime}?replication=true" -X -qAt -c 'IDENTIFY_SYSTEM'`, first)).rejects.toThrow(/no pg_hba.conf entry for replication connection/);
  }, 240_000);

  it('a cluster set up without potentia_app (before the split): db:migrate as the owner goes on; made later, one file grants it', async () => {
    const cluster = await newCluster();
    // the setup as it read before potentia_app: the owner has no CREATEROLE, so the migrations cannot make it
    const setup = shBlockAfter('a superuser prepares the cluster and the database once')
      .split('\n').filter((l) => !l.includes('potentia_app')).join('\n');
    await bash(setup, cluster);
    expect(await bash('npm run db:migrate -- --strict', cluster, { DATABASE_URL: roleUrl(cluster) })).toMatch(/migrate potentia: \d+ step\(s\) applied/);
    const admin = postgres(cluster.url('potentia'), { max: 1, onnotice: () => {} });
    try {
      expect((await admin`select count(*)::int as n from pg_roles where rolname = 'potentia_app'`)[0]!.n).toBe(0);
      // what the docs' notice says to do: a superuser makes it, the owner runs the file
      await admin.unsafe('create role potentia_app nologin; grant anon, authenticated, service_role to potentia_app');
      await bash(`psql "${roleUrl(cluster)}" -X -q -v ON_ERROR_STOP=1 -f sql/security/app_role.sql`, cluster);
      const [granted] = await admin`select has_function_privilege('potentia_app', 'internal.can_write_role(app.member_role)', 'execute') as ok,
                                           has_schema_privilege('potentia_app', 'graphile_worker', 'usage') as queue`;
      expect(granted).toEqual({ ok: true, queue: true });
    } finally {
      await admin.end();
    }
  }, 240_000);
});

// npm run upgrade:v1:acceptance [-- --blocks 100000 --canvases 1000 --embedded 0.1 --source postgres|sqlite --keep
//                                   --pgtap-exclude a.test.sql,… --database NAME]
// The upgrade at size, never part of npm test: a generated v1 database (100,000 blocks over 1,000
// canvases by default) is upgraded into a database built as `supabase db push` + seed builds one
// (src/db/push.ts), with the dry-run report, the progress lines and the verification; then the
// pgTAP suite runs on the upgraded database (pg_prove over supabase/tests/*.sql, 000_helpers
// first, as scripts/test runs it). Exits non-zero when the verification or pgTAP fails.
// Databases: <server of TEST_DATABASE_URL>/NAME and NAME_v1 (--database NAME, default
// potentia_upgrade_acceptance; the SQLite source is <tmpdir>/NAME.sqlite); dropped at the end unless --keep. docs/upgrade-v1.md pastes the output of a real run.
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import postgres from 'postgres';
import { testDatabaseUrl } from '../src/config.ts';
import { pushLikeSupabase } from '../src/db/push.ts';
import { generateFixture, writePostgresFixture, writeSqliteFixture } from '../src/upgrade/v1-fixture.ts';
import { runUpgrade } from '../src/upgrade/upgrade.ts';

const { values, number } = parseCommandLine({
  options: {
    blocks: { type: 'string', default: '100000' }, canvases: { type: 'string', default: '1000' },
    embedded: { type: 'string', default: '0.1' }, source: { type: 'string', default: 'postgres' }, keep: { type: 'boolean' },
    batch: { type: 'string', default: '5000' },
    // pgTAP files to leave out (e.g. all of them, to time the upgrade alone)
    'pgtap-exclude': { type: 'string', default: '' },
    // the target's name (the v1 source is NAME_v1): both are dropped and made again, so two runs on
    // one server need two names
    database: { type: 'string', default: 'potentia_upgrade_acceptance' },
  },
});
if (!/^[a-z_][a-z0-9_]{0,59}$/.test(values.database!)) {
  console.error(`--database ${JSON.stringify(values.database)}: a lower-case database name (letters, digits, _; at most 60 characters), since NAME and NAME_v1 are dropped and created`);
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const urlOf = (name: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${name}`; return u.toString(); };
const names = { v1: `${values.database}_v1`, v2: values.database! };
const sqlitePath = join(tmpdir(), `${values.database}.sqlite`);
const blocks = number('blocks', wholeNumber(0));
const canvases = number('canvases', wholeNumber(1));
const embedded = number('embedded', decimalNumber(0, 1));
const batch = number('batch', wholeNumber(1));
const sqlite = values.source === 'sqlite';
const seconds = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
let failed = false;
try {
  for (const name of Object.values(names)) await admin.unsafe(`drop database if exists ${name} with (force)`);
  let t = Date.now();
  const fx = generateFixture({ blocks, canvases, embedded, seed: 2026 }, sqlite);
  const from = sqlite ? sqlitePath : urlOf(names.v1);
  if (sqlite) await writeSqliteFixture(sqlitePath, fx, { force: true });
  else await writePostgresFixture(from, fx);
  console.log(`fixture: v1 ${sqlite ? 'SQLite file' : 'Postgres database'} with ${fx.users.length} users, ${fx.canvases.length} canvases, ` +
    `${fx.blocks.length} blocks, ${fx.embeddings.length} embedding rows (${seconds(t)})`);

  t = Date.now();
  await admin.unsafe(`create database ${names.v2}`);
  const target = postgres(urlOf(names.v2), { max: 1, onnotice: () => {} });
  try { await pushLikeSupabase(target, root, { seed: true }); } finally { await target.end(); }
  console.log(`target: ${names.v2} built from supabase/migrations + seed.sql, as supabase db push (${seconds(t)})`);

  const log = (line: string) => console.log(line);
  console.log('\n$ npm run upgrade:v1 -- --from <v1> --to <v2> --dry-run');
  await runUpgrade({ from, to: urlOf(names.v2), dryRun: true, batch, log });

  console.log(`\n$ npm run upgrade:v1 -- --from <v1> --to <v2> --batch ${values.batch}`);
  t = Date.now();
  const result = await runUpgrade({ from, to: urlOf(names.v2), batch, log });
  console.log(`upgrade + verification: ${seconds(t)}`);
  if (!result.ok) failed = true;

  console.log('\n$ pg_prove over supabase/tests/*.sql on the upgraded database');
  const excluded = new Set(values['pgtap-exclude'].split(',').filter(Boolean));
  const files = readdirSync(join(root, 'supabase/tests')).filter((f) => f.endsWith('.sql') && !excluded.has(f)).sort()
    .map((f) => join('supabase/tests', f));
  if (excluded.size > 0) console.log(`(excluded: ${[...excluded].join(', ')})`);
  t = Date.now();
  const prove = spawnSync('pg_prove', ['--dbname', urlOf(names.v2), ...files], { cwd: root, encoding: 'utf8' });
  const out = `${prove.stdout ?? ''}${prove.stderr ?? ''}`;
  console.log(out.split('\n').filter((l) => /^(Files=|Result:|Failed|supabase\/tests\/.*(ok|Failed|Dubious))/.test(l.trim()) || /not ok/.test(l)).join('\n'));
  console.log(`pg_prove: exit ${prove.status ?? prove.error?.message} (${seconds(t)})`);
  if (prove.status !== 0) failed = true;
} catch (err) {
  console.error(`acceptance failed: ${(err as Error).stack ?? err}`);
  failed = true;
} finally {
  if (!values.keep) {
    for (const name of Object.values(names)) await admin.unsafe(`drop database if exists ${name} with (force)`);
    for (const f of [sqlitePath, `${sqlitePath}-wal`, `${sqlitePath}-shm`]) rmSync(f, { force: true });
  }
  await admin.end();
}
process.exitCode = failed ? 1 : 0;

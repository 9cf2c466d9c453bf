// scratch: instructions per call of take_limit_slot variants (not committed)
import { writeFileSync, readFileSync } from 'node:fs';
import postgres from 'postgres';
import { CallgrindCluster } from '../scripts/lib/callgrind-cluster.ts';
import { findPgbench } from '../scripts/lib/bench.ts';

const variants = process.argv.slice(2);
const setup = readFileSync('/tmp/h151_micro_setup.sql', 'utf8');
const cluster = CallgrindCluster.create('/usr/lib/postgresql/15/bin', 5552);
const pgbench = await findPgbench('15');
try {
  await cluster.start();
  const admin = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} });
  await admin.unsafe('create database micro');
  await admin.end();
  const db = postgres(cluster.url('micro'), { max: 1, onnotice: () => {} });
  await db.unsafe(setup);
  await db.end();
  await cluster.stop();
  await cluster.start(true);
  for (const round of [1, 2]) for (const v of variants) {
    const file = `/tmp/h151_micro_${v}.sql`;
    writeFileSync(file, `select internal.${v}('00000000-0000-4000-8000-00000000000${round}', 'mutations', 1000000000, 60);\n`);
    const n = await cluster.instructionsPerTransaction(pgbench, { database: 'micro', file, defines: {}, transactions: [100, 300] });
    console.log(`round ${round} ${v}: ${Math.round(n)}`);
  }
} finally {
  await cluster.stop().catch(() => {});
  await cluster.destroy();
}

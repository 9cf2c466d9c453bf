// npm run upgrade:v1-fixture -- --blocks N --canvases M --out <postgres URL | SQLite file> [--users U] [--seed S]
//                               [--embedded 0.1] [--no-anomalies] [--force]
// Writes a v1 database of that size (src/upgrade/v1-fixture.ts, docs/upgrade-v1.md "A fixture").
import { parseCommandLine } from './lib/command-line.ts';
import { generateFixture, writePostgresFixture, writeSqliteFixture } from '../src/upgrade/v1-fixture.ts';
import { isPostgresUrl } from '../src/upgrade/upgrade.ts';

const usage = 'usage: npm run upgrade:v1-fixture -- --blocks N --canvases M --out <postgres URL | SQLite file> ' +
  '[--users U] [--seed S] [--embedded SHARE] [--no-anomalies] [--force]';
const { values } = parseCommandLine({
  options: {
    blocks: { type: 'string' }, canvases: { type: 'string' }, out: { type: 'string' }, users: { type: 'string' },
    seed: { type: 'string' }, embedded: { type: 'string' }, 'no-anomalies': { type: 'boolean' }, force: { type: 'boolean' },
  },
});
const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
const blocks = num(values.blocks);
const canvases = num(values.canvases);
if (!values.out || blocks === undefined || canvases === undefined || !Number.isInteger(blocks) || !Number.isInteger(canvases) ||
    blocks < 0 || canvases < 1) {
  console.error(usage);
  process.exit(2);
}
const started = Date.now();
const sqlite = !isPostgresUrl(values.out);
const fx = generateFixture({
  blocks, canvases, users: num(values.users), seed: num(values.seed), embedded: num(values.embedded), anomalies: !values['no-anomalies'],
}, sqlite);
try {
  if (sqlite) await writeSqliteFixture(values.out, fx, { force: values.force });
  else await writePostgresFixture(values.out, fx, { force: values.force });
} catch (err) {
  console.error(`upgrade:v1-fixture failed: ${(err as Error).message}`);
  process.exit(2);
}
console.log(`v1 fixture (${sqlite ? 'SQLite' : 'Postgres'}) ${sqlite ? values.out : new URL(values.out).pathname.slice(1)}: ` +
  `${fx.users.length} users, ${fx.canvases.length} canvases, ${fx.blocks.length} blocks, ${fx.embeddings.length} embedding rows ` +
  `(${Date.now() - started} ms)`);

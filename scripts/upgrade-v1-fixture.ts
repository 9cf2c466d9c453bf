// npm run upgrade:v1-fixture -- --blocks N --canvases M --out <postgres URL | SQLite file> [--users U] [--seed S]
//                               [--embedded 0.1] [--no-anomalies] [--force]
// Writes a v1 database of that size (src/upgrade/v1-fixture.ts, docs/upgrade-v1.md "A fixture").
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { generateFixture, writePostgresFixture, writeSqliteFixture } from '../src/upgrade/v1-fixture.ts';
import { isPostgresUrl } from '../src/upgrade/upgrade.ts';

const usage = 'usage: npm run upgrade:v1-fixture -- --blocks N --canvases M --out <postgres URL | SQLite file> ' +
  '[--users U] [--seed S] [--embedded SHARE] [--no-anomalies] [--force]';
const { values, number } = parseCommandLine({
  options: {
    blocks: { type: 'string' }, canvases: { type: 'string' }, out: { type: 'string' }, users: { type: 'string' },
    seed: { type: 'string' }, embedded: { type: 'string' }, 'no-anomalies': { type: 'boolean' }, force: { type: 'boolean' },
  },
});
const blocks = number('blocks', wholeNumber(0), undefined);
const canvases = number('canvases', wholeNumber(1), undefined);
const users = number('users', wholeNumber(1), undefined);
const seed = number('seed', wholeNumber(0), undefined);
const embedded = number('embedded', decimalNumber(0, 1), undefined);
if (!values.out || blocks === undefined || canvases === undefined) {
  console.error(usage);
  process.exit(2);
}
const started = Date.now();
const sqlite = !isPostgresUrl(values.out);
const fx = generateFixture({
  blocks, canvases, users, seed, embedded, anomalies: !values['no-anomalies'],
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

// docs/mutations.md's "From SQL" block, run with psql as a reader runs it (placeholders filled in):
// a mutation as a signed-in user, and the refusal as postgres without one. No test ran it before.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';

const root = new URL('../..', import.meta.url).pathname;
let db: Database;
beforeAll(() => { db = testDatabase(2); });
afterAll(async () => { await db?.close(); });

/** The first ```sql block after `marker` in a doc. */
function sqlBlockAfter(file: string, marker: string): string {
  const doc = readFileSync(join(root, file), 'utf8');
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`${file} no longer has "${marker}"`);
  const block = /```sql\n([\s\S]*?)```/.exec(doc.slice(at));
  if (!block) throw new Error(`no sql block after "${marker}" in ${file}`);
  return block[1]!;
}

describe('docs/mutations.md: SQL runs as written', () => {
  it('docs/mutations.md: a mutation as a signed-in user succeeds; as postgres without claims it is refused unauthorized', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const block = sqlBlockAfter('docs/mutations.md', '**From SQL**');
    expect(block).toContain('<user id>');
    expect(block).toContain('<canvas id>');
    const script = block.replaceAll('<user id>', users.owner!).replaceAll('<canvas id>', canvasId).replaceAll("'op-1'", `'op-${canvasId}'`);
    const result = JSON.parse((await psqlScript(script)).split('\n').filter((l) => l.startsWith('{"block"') || l.startsWith('{"error"')).pop()!);
    expect(result).toMatchObject({ status: 'success', canvas_seq: 1, version: 1, block: { type: 'text', content: { text: 'Hello' } } });

    // "Called as postgres without them, the answer is `unauthorized: a signed-in user is required`"
    const doc = readFileSync(join(root, 'docs/mutations.md'), 'utf8');
    const claim = /the answer is `unauthorized: ([^`]+)`/.exec(doc);
    expect(claim, 'docs/mutations.md names the answer without a user').not.toBeNull();
    const call = script.split('\n').find((l) => l.startsWith('select api.upsert_block_atomic'))!.replace(`'op-${canvasId}'`, `'op2-${canvasId}'`);
    const refused = JSON.parse((await psqlScript(call)).trim());
    expect(refused).toMatchObject({ status: 'failed', error: { code: 'unauthorized' } });
    expect(refused.error.message).toContain(claim![1]!.replace(/\s+/g, ' ')); // the doc wraps lines
  });
});

async function psqlScript(script: string): Promise<string> {
  const child = execFile('psql', [testDatabaseUrl(), '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1']);
  let stdout = '', stderr = '';
  child.stdout!.on('data', (d) => { stdout += d; });
  child.stderr!.on('data', (d) => { stderr += d; });
  child.stdin!.end(script);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`psql failed (${code}):\n${script}\n${stderr}`);
  return stdout;
}

// docs/mutations.md's "From SQL" block, run with psql as a reader runs it, as written (after npm start's seed):
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
  it('docs/mutations.md: pasted as written after npm start (the seed\'s demo user and canvas), a mutation succeeds; as postgres without claims it is refused unauthorized', async () => {
    // npm start loads supabase/seed.sql: the block names its demo user and canvas, so it runs as
    // written (it had '<user id>' and '<canvas id>': "invalid input syntax for type uuid")
    await psqlScript(readFileSync(join(root, 'supabase/seed.sql'), 'utf8'));
    const block = sqlBlockAfter('docs/mutations.md', '**From SQL**');
    const first = lastAnswer(await psqlScript(block));
    expect(first).toMatchObject({ status: 'success', block: { type: 'text', content: { text: 'Hello' }, canvas_id: '00000000-0000-4000-8000-00000000d003' } });
    // "Sent again with the same client_op_id … the first one's, with duplicate: true"
    const again = lastAnswer(await psqlScript(block));
    expect(again).toMatchObject({ status: 'success', duplicate: true, block_id: first.block_id });

    // the same with another user and canvas's ids put in, as the doc says
    const { canvasId, users } = await createCanvas(db.sql);
    const script = block.replaceAll('00000000-0000-4000-8000-00000000d001', users.owner!).replaceAll('00000000-0000-4000-8000-00000000d003', canvasId);
    expect(lastAnswer(await psqlScript(script))).toMatchObject({ status: 'success', canvas_seq: 1, version: 1 });

    // "Called as postgres without them, the answer is `unauthorized: a signed-in user is required`"
    const doc = readFileSync(join(root, 'docs/mutations.md'), 'utf8');
    const claim = /the answer is `unauthorized: ([^`]+)`/.exec(doc);
    expect(claim, 'docs/mutations.md names the answer without a user').not.toBeNull();
    const call = script.split('\n').find((l) => l.startsWith('select api.upsert_block_atomic'))!.replace("'op-1'", `'op2-${canvasId}'`);
    const refused = JSON.parse((await psqlScript(call)).trim());
    expect(refused).toMatchObject({ status: 'failed', error: { code: 'unauthorized' } });
    expect(refused.error.message).toContain(claim![1]!.replace(/\s+/g, ' ')); // the doc wraps lines
    // no claims at all are not a sub that is no user id: the answer said "the claims' sub  is not a
    // user id" (an empty sub) to a caller who had set none; it says what to set instead
    expect(refused.error.message).toBe('a signed-in user is required to change blocks: no claims name one '
      + '(from SQL: set local role authenticated and request.jwt.claims with the user\'s id as sub, docs/mutations.md)');
    const noSub = lastAnswer(await psqlScript(script.replace(`"sub":"${users.owner!}",`, '').replace("'op-1'", `'op4-${canvasId}'`)));
    expect(noSub).toMatchObject({ status: 'failed', error: { code: 'unauthorized', message: refused.error.message } });

    // "sub must be the user's uuid": one that is not (a placeholder left in) said only that nobody
    // had signed in; the answer names the sub and what it must be
    const placeholder = script.replace(`"sub":"${users.owner!}"`, '"sub":"<user id>"').replace("'op-1'", `'op3-${canvasId}'`);
    const unusable = lastAnswer(await psqlScript(placeholder)) as { status: string; error: { code: string; message: string } };
    expect(unusable).toMatchObject({ status: 'failed', error: { code: 'unauthorized' } });
    expect(unusable.error.message).toBe('a signed-in user is required to change blocks: the claims\' sub <user id> is not a user id (the user\'s uuid, auth.users.id)');
  });
});

/** The last mutation answer psql printed. */
function lastAnswer(stdout: string): Record<string, unknown> & { block_id?: string } {
  return JSON.parse(stdout.split('\n').filter((l) => l.startsWith('{"block"') || l.startsWith('{"error"')).pop()!);
}

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

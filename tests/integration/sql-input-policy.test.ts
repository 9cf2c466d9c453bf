// The api functions are callable without the Potentia server: PostgREST's /rpc on Supabase, SQL.
// What HTTP, H1 and realtime refuse by the input policy (src/input-policy.ts) must not be stored
// through them either (internal.check_json_policy): a __proto__ key, nesting deeper than 64, a
// number a double would change. Both checks agree on every number here; the server's own calls
// (potentia.input_policy = 'checked') are not walked twice.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { readJson } from '../../src/input-policy.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';

const db = testDatabase(2);
afterAll(() => db.close());

const NUMBERS = ['0', '-0', '1', '-1', '0.1', '1e21', '1E+21', '100000000000000000000', '9007199254740992', '9007199254740993', '-9007199254740993',
  '12345678901234567890123', '3.141592653589793', '3.141592653589793238462643383279', '1e308', '1.7976931348623157e308', '1.7976931348623158e308',
  '1e309', '1e400', '-1e400', '5e-324', '4.9e-324', '2e-324', '1e-310', '1e-400', '2.2250738585072014e-308', '123.456e-5', '0.30000000000000004',
  '0.3000000000000000444', '1.0', '1e0', '10e-1'];

/** Whether internal.check_json_policy refuses `json` (and the field it names), as a caller other than the server. */
async function sqlRefuses(json: string): Promise<string | null> {
  try {
    await db.sql.begin(async (tx) => { await tx`select internal.check_json_policy(${json}::text::jsonb, 'x')`; });
    return null;
  } catch (err) {
    const e = err as { code?: string; detail?: string };
    expect(e.code, String(err)).toBe('PX400');
    return JSON.parse(e.detail ?? '{}').field;
  }
}

describe('the input policy in SQL', () => {
  it('refuses exactly the numbers the server refuses', async () => {
    for (const n of NUMBERS) {
      const ts = readJson(new TextEncoder().encode(`{"n":${n}}`));
      expect({ n, refused: (await sqlRefuses(`{"n":${n}}`)) !== null }).toEqual({ n, refused: !('value' in ts) });
    }
  });

  it('refuses a __proto__ key at any depth and nesting deeper than 64 levels, as the server does', async () => {
    const nest = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    for (const json of ['{"__proto__":1}', '{"a":[{"b":{"__proto__":{}}}]}', `{"d":${nest(64)}}`, `[${nest(70)}]`, nest(2000)]) {
      expect(await sqlRefuses(json), json.slice(0, 40)).toBe('x');
    }
    for (const json of ['{"proto":1,"__proto":2,"__proto__x":3}', '["__proto__"]', `{"d":${nest(63)}}`, nest(64)]) {
      expect(await sqlRefuses(json), json.slice(0, 40)).toBeNull();
    }
    // the server's transactions are not walked again (it read the request through the policy)
    await db.sql.begin(async (tx) => {
      await tx`select set_config('potentia.input_policy', 'checked', true)`;
      await tx`select internal.check_json_policy('{"__proto__":1}'::jsonb, 'x')`;
    });
  });

  it('api functions called as PostgREST calls them refuse it naming their argument, and write nothing', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const asOwner = (run: (tx: any) => Promise<any>): Promise<any> => db.sql.begin(async (tx) => {
      await tx`select set_config('role', 'authenticated', true),
                      set_config('request.jwt.claims', ${JSON.stringify({ sub: users.owner, role: 'authenticated' })}, true)`;
      return run(tx);
    });
    const op = await asOwner((tx) => tx`select api.upsert_block_atomic(${canvasId}, null, 'create', ${randomUUID()}, null,
      '{"type":"text","content":{"__proto__":{"polluted":true}}}'::jsonb) as r`);
    expect(op[0].r).toMatchObject({ status: 'failed', error: { code: 'invalid_input', field: 'patch' } });
    const batch = await asOwner((tx) => tx`select api.upsert_blocks_atomic(${canvasId},
      ${JSON.stringify([{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: {} } }])}::text::jsonb
        || '[{"action":"create","client_op_id":"x1","patch":{"type":"text","content":{"n":1e400}}}]'::jsonb) as r`);
    expect(batch[0].r).toMatchObject({ status: 'failed', failed_index: 1, error: { code: 'invalid_input', field: 'patch' } });
    for (const [call, field] of [
      [(tx: any) => tx`select api.update_canvas(${canvasId}, null, '{"zoom":9007199254740993}'::jsonb)`, 'settings'],
      [(tx: any) => tx`select api.create_canvas((select workspace_id from app.canvases where canvas_id = ${canvasId}), 'x', '{"__proto__":{}}'::jsonb)`, 'settings'],
      [(tx: any) => tx`select api.update_presence(${canvasId}, '{"cursor":{"x":1e400}}'::jsonb)`, 'cursor'],
    ] as const) {
      const err: any = await asOwner(call).catch((e: unknown) => e);
      expect({ code: err.code, field: JSON.parse(err.detail ?? '{}').field }).toEqual({ code: 'PX400', field });
    }
    const [row] = await db.sql`select (select count(*)::int from app.blocks where canvas_id = ${canvasId}) as blocks,
      (select settings from app.canvases where canvas_id = ${canvasId}) as settings`;
    expect(row).toEqual({ blocks: 0, settings: {} });
  });
});

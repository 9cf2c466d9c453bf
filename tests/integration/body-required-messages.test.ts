import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// A required body field left out is refused 400 invalid_input on the field, saying it is required
// and what it takes: it said zod's "Invalid input: expected string, received undefined" (an update
// without block_id, a file without size_bytes), which reads as a type error of a value the caller
// never sent. A value of the wrong type keeps zod's wording (it names what was received).

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server?.stop(); await db.close(); });

it('a missing required body field: 400 invalid_input on the field, "is required" and what it takes', async () => {
  const { canvasId, users } = await createCanvas(db.sql, []);
  const token = await tokenFor(server, users.owner!);
  const refused = async (method: string, path: string, body: unknown) => {
    const res = await fetch(`${server.url}/api/v1${path}`, {
      method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    expect(res.status, `${path} ${JSON.stringify(body)}`).toBe(400);
    return ((await res.json()) as { error: Record<string, unknown> }).error;
  };
  const canvas = `/canvas/${canvasId}`;
  const cases: Array<[string, string, unknown, Record<string, unknown>]> = [
    ['POST', `${canvas}/mutate`, { action: 'update', client_op_id: 'a', base_version: 1, patch: { content: { a: 1 } } },
      { field: 'block_id', message: 'block_id: is required: a string' }],
    ['POST', `${canvas}/mutate`, { action: 'update', client_op_id: 'a', block_id: canvasId, patch: { content: { a: 1 } } },
      { field: 'base_version', message: 'base_version: is required: a number' }],
    ['POST', `${canvas}/mutate`, { ops: [{ action: 'create', client_op_id: 'a', patch: { type: 'text' } }, { action: 'create', patch: { type: 'text' } }] },
      { field: 'ops.1.client_op_id', message: 'ops.1.client_op_id: is required: a string', failed_index: 1 }],
    ['POST', `${canvas}/files`, { filename: 'a.pdf', content_type: 'application/pdf' },
      { field: 'size_bytes', message: 'size_bytes: is required: a number' }],
    ['POST', '/workspaces', {}, { field: 'name', message: 'name: is required: a string' }],
    ['POST', '/canvas', {}, { field: 'workspace_id', message: 'workspace_id: is required: a string' }],
    // sent, of another type: zod's own message, which names what was received
    ['POST', `${canvas}/files`, { filename: 'a.pdf', content_type: 'application/pdf', size_bytes: '1' },
      { field: 'size_bytes', message: 'size_bytes: Invalid input: expected number, received string' }],
  ];
  for (const [method, path, body, error] of cases) {
    expect(await refused(method, path, body), `${path} ${JSON.stringify(body)}`).toEqual({ code: 'invalid_input', ...error });
  }
});

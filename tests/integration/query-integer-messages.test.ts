import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// An integer query parameter (queryInteger: since_canvas_seq and limit of GET /api/v1/canvas/{id}/changes,
// since_seq of the snapshot, the list pages) refused for every bad spelling with 400 invalid_input on
// its name, and a message that says what to send. A missing one said "Invalid input: expected string,
// received undefined", one sent twice "... received array", and the bounds had two wordings for one
// rule ("must be at most 9007199254740991" past 16 digits, "Too big: expected int to be <=9007199254740991" at 2^53).

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server?.stop(); await db.close(); });

it('every bad since_canvas_seq and limit: 400 invalid_input on the parameter, saying what to send', async () => {
  const { canvasId, users } = await createCanvas(db.sql, []);
  const token = await tokenFor(server, users.owner!);
  const refused = async (query: string) => {
    const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/changes${query}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status, query).toBe(400);
    return ((await res.json()) as { error: { code: string; field: string; message: string } }).error;
  };
  const seqMax = Number.MAX_SAFE_INTEGER;
  const cases: Array<[string, string, string]> = [
    ['', 'since_canvas_seq', `since_canvas_seq: is required: a whole number from 0 to ${seqMax}`],
    ['?since_canvas_seq=0&since_canvas_seq=1', 'since_canvas_seq', 'since_canvas_seq: was sent more than once: send it once'],
    ['?since_canvas_seq=-1', 'since_canvas_seq', 'since_canvas_seq: must be a whole number written in decimal digits'],
    ['?since_canvas_seq=9007199254740992', 'since_canvas_seq', `since_canvas_seq: must be at most ${seqMax}`],
    ['?since_canvas_seq=9223372036854775808', 'since_canvas_seq', `since_canvas_seq: must be at most ${seqMax}`],
    ['?since_canvas_seq=0&limit=0', 'limit', 'limit: must be at least 1'],
    ['?since_canvas_seq=0&limit=1001', 'limit', 'limit: must be at most 1000'],
    ['?since_canvas_seq=0&limit=1&limit=2', 'limit', 'limit: was sent more than once: send it once'],
  ];
  for (const [query, field, message] of cases) expect(await refused(query), query).toEqual({ code: 'invalid_input', field, message });
});

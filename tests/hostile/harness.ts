import { request as httpRequest } from 'node:http';
import type { Sql } from 'postgres';
import WebSocket from 'ws';
import { withRequest } from '../../src/db/request.ts';
import { rawRequest, type RawResponse } from '../helpers/http.ts';

/**
 * The hostile corpus's bookkeeping: every input goes through `attempt`, which counts it, counts
 * 5xx and `internal` answers, and — for an input the server refused — compares the row counts of
 * every `app` table before and after it. Violations are collected (not thrown) so one run reports
 * all of them; the corpus asserts the totals at the end.
 */
export type Outcome = {
  /** the server refused the input (4xx, error/rejected/conflict frame, ignored frame, closed socket) */
  rejected: boolean;
  fiveXX: boolean;
  internal: boolean;
  /** what came back, for messages */
  detail: string;
};

export const stats = { tried: 0, fiveXX: 0, internal: 0, writes: 0, leaks: 0, crashes: 0 };

/** The server under test: its URL, and a check run before every input (restarts a process that died, counting the crash). */
export const target = { url: '', ensure: async (): Promise<void> => {} };
export const violations: string[] = [];

/**
 * Rows a refused attempt may leave by design: its audit row, its rate-limit counter, and the
 * failed/conflict operation row of a member on their own canvas (the attempt log of
 * sql/rpc/mutate.sql). Everything else — and any attempt row of a non-member — counts as a write.
 */
export const ATTEMPT_ACCOUNTING = new Set(['system_audit', 'rate_limits', 'rate_limit_slots', 'block_operations:member_attempts']);

let tablesQuery: string | null = null;

/** Row counts of every table in schema `app` (block_operations split by applied / member attempt / other attempt). */
export async function counts(sql: Sql): Promise<Record<string, number>> {
  if (!tablesQuery) {
    const tables = await sql<{ relname: string }[]>`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'app' and c.relkind in ('r', 'p') and not c.relispartition order by 1`;
    const parts = tables.map(({ relname }) => relname === 'block_operations'
      ? `(select count(*) from app.block_operations where status = 'success')::int as "block_operations:applied",
         (select count(*) from app.block_operations o where status <> 'success' and internal.canvas_role(o.canvas_id, o.actor_id) is not null)::int as "block_operations:member_attempts",
         (select count(*) from app.block_operations o where status <> 'success' and internal.canvas_role(o.canvas_id, o.actor_id) is null)::int as "block_operations:other_attempts"`
      : `(select count(*) from app.${relname})::int as "${relname}"`);
    tablesQuery = `select ${parts.join(', ')}`;
  }
  const [row] = await sql.unsafe(tablesQuery);
  return row as Record<string, number>;
}

/** Tables whose count changed; attempt accounting is ignored unless `strict`. */
export function changed(before: Record<string, number>, after: Record<string, number>, strict: boolean): string[] {
  // a presence row or session going away is a session ending (a socket the input got closed leaves the canvas)
  const ending = (k: string) => (k === 'presence' || k === 'presence_sessions') && after[k]! < before[k]!;
  return Object.keys(after).filter((k) => after[k] !== before[k] && (strict || !ATTEMPT_ACCOUNTING.has(k)) && !ending(k))
    .map((k) => `${k} ${before[k]}→${after[k]}`);
}

/**
 * Runs one hostile input and books it. `strict`: a refusal must leave even the attempt
 * accounting untouched (input refused before any database work, e.g. invalid UTF-8).
 */
export async function attempt(sql: Sql, label: string, run: () => Promise<Outcome>, opts: { strict?: boolean } = {}): Promise<Outcome> {
  await target.ensure();
  const before = await counts(sql);
  let outcome: Outcome;
  try {
    outcome = await run();
  } catch (err) {
    // Node's client refused to send it (a header with bytes HTTP forbids): nothing reached the server
    if ((err as { code?: string }).code === 'ERR_INVALID_CHAR' || (err as { code?: string }).code === 'ERR_UNESCAPED_CHARACTERS') {
      return { rejected: true, fiveXX: false, internal: false, detail: 'not sendable' };
    }
    outcome = { rejected: true, fiveXX: false, internal: false, detail: `no answer: ${(err as Error).message}` };
    violations.push(`${label}: ${outcome.detail}`);
  }
  stats.tried += 1;
  if (outcome.fiveXX) { stats.fiveXX += 1; violations.push(`${label}: 5xx ${outcome.detail}`); }
  if (outcome.internal) { stats.internal += 1; violations.push(`${label}: internal ${outcome.detail}`); }
  if (outcome.rejected) {
    const diff = changed(before, await counts(sql), opts.strict ?? false);
    if (diff.length > 0) { stats.writes += 1; violations.push(`${label}: refused (${outcome.detail.slice(0, 200)}) but wrote ${diff.join(', ')}`); }
  }
  return outcome;
}

/** An HTTP answer as an Outcome. */
export function httpOutcome(res: RawResponse): Outcome {
  let code: unknown;
  try { code = JSON.parse(res.text)?.error?.code; } catch { /* not JSON */ }
  return { rejected: res.status >= 400, fiveXX: res.status >= 500, internal: code === 'internal', detail: `${res.status} ${res.text.slice(0, 300)}` };
}

/** rawRequest, booked. */
export async function http(sql: Sql, _baseUrl: string, label: string, req: Parameters<typeof rawRequest>[1], opts: { strict?: boolean } = {}) {
  let res: RawResponse | undefined;
  const outcome = await attempt(sql, label, async () => httpOutcome(res = await rawRequest(target.url, { timeoutMs: 15_000, ...req })), opts);
  return { res: res ?? { status: 0, headers: {}, text: outcome.detail }, outcome };
}

/** A WebSocket upgrade request with a raw path: the refusal's status and body, or 101. */
export function rawUpgrade(baseUrl: string, path: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: url.hostname, port: url.port, path, method: 'GET', agent: false, timeout: 15_000,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve({ status: res.statusCode ?? 101, headers: res.headers, text: '' }); });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within 15 s: upgrade ${path.slice(0, 200)}`)));
    req.on('error', reject);
    req.end();
  });
}

/** One socket with everything it received; `until` waits for a frame matching `pred` after index `from`. */
export class Inbox {
  readonly frames: any[] = [];
  closed: { code: number; reason: string } | null = null;
  constructor(readonly ws: WebSocket, decode: (data: Buffer, isBinary: boolean) => any) {
    ws.on('message', (d: Buffer, isBinary) => { try { this.frames.push(decode(d, isBinary)); } catch { this.frames.push({ undecodable: true }); } });
    ws.on('close', (code, reason) => { this.closed = { code, reason: String(reason) }; });
    ws.on('error', () => {});
  }
  async until(from: number, pred: (f: any) => boolean, ms = 10_000): Promise<{ found: any | null; frames: any[] }> {
    const end = Date.now() + ms;
    for (;;) {
      const found = this.frames.slice(from).find(pred);
      if (found) return { found, frames: this.frames.slice(from) };
      if (this.closed) return { found: null, frames: this.frames.slice(from) };
      if (Date.now() > end) throw new Error(`no matching frame within ${ms} ms; got ${JSON.stringify(this.frames.slice(from).slice(-3)).slice(0, 400)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/**
 * Opens a socket; resolves once open, or with the refusal status. The inbox listens from the
 * start: a server's first frame can arrive in the same read as the 101.
 */
export function openSocket(url: string, decode: (data: Buffer, isBinary: boolean) => any = (d) => JSON.parse(String(d))): Promise<{ ws: WebSocket; status: number; inbox: Inbox }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024 });
    const inbox = new Inbox(ws, decode);
    ws.once('open', () => resolve({ ws, status: 101, inbox }));
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve({ ws, status: res.statusCode ?? 0, inbox }); });
    ws.once('error', reject);
  });
}

/**
 * Rows of the tenant `ids` that `userId` can read through RLS, per app table (a table the role
 * may not select from at all shows nothing).
 */
export async function visibleRows(sql: Sql, userId: string, ids: { workspaces: string[]; canvases: string[]; blocks: string[]; users: string[] }): Promise<Record<string, number>> {
  const columns = await sql<{ table_name: string; column_name: string }[]>`
    select c.table_name, c.column_name from information_schema.columns c
    join pg_class k on k.relname = c.table_name join pg_namespace n on n.oid = k.relnamespace and n.nspname = c.table_schema
    where c.table_schema = 'app' and k.relkind in ('r', 'p') and not k.relispartition
      and c.column_name in ('workspace_id', 'canvas_id', 'block_id', 'user_id', 'actor_id', 'created_by', 'updated_by')`;
  const byTable = new Map<string, string[]>();
  for (const { table_name, column_name } of columns) byTable.set(table_name, [...(byTable.get(table_name) ?? []), column_name]);
  const out: Record<string, number> = {};
  for (const [table, all] of byTable) {
    // a row belongs to the tenant of its workspace or canvas when it has one (a block or user id in it
    // may be one the writer typed); else to its block's, else to its user's
    const owning = all.filter((c) => c === 'workspace_id' || c === 'canvas_id');
    const cols = owning.length > 0 ? owning : all.includes('block_id') ? ['block_id'] : all;
    const where = cols.map((col) => {
      const set = col === 'workspace_id' ? 'workspaces' : col === 'canvas_id' ? 'canvases' : col === 'block_id' ? 'blocks' : 'users';
      return `${col}::text = any($${['workspaces', 'canvases', 'blocks', 'users'].indexOf(set) + 1}::text[])`;
    }).join(' or ');
    try {
      out[table] = await withRequest(sql, { claims: { sub: userId, role: 'authenticated' } }, async (tx) => {
        // every parameter typed, whichever the table's columns use
        const [row] = await tx.unsafe(`select count(*)::int as n from app.${table}
          where cardinality($1::text[]) + cardinality($2::text[]) + cardinality($3::text[]) + cardinality($4::text[]) >= 0 and (${where})`, [ids.workspaces, ids.canvases, ids.blocks, ids.users]);
        return row!.n as number;
      });
    } catch (err) {
      if ((err as { code?: string }).code !== '42501') throw err; // no SELECT privilege: nothing readable
      out[table] = 0;
    }
  }
  return out;
}

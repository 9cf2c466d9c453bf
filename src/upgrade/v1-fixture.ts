// A v1 database of any size, as a Postgres database or a SQLite file (npm run upgrade:v1-fixture;
// docs/upgrade-v1.md, "A fixture"). Deterministic for a seed. Besides ordinary data it holds, on
// purpose, what a real v1 database may hold and v2 refuses, so the upgrade's rules are exercised:
// y_order ties and gaps, orphan parents, a parent on another canvas, parent cycles, blocks of a
// missing canvas, canvases without an owner, bad titles and types, non-object content, bad and
// duplicate embeddings, embeddings of missing blocks, two users with one email; the SQLite file
// also has invalid JSON, U+0000 in content, non-uuid ids and embeddings as BLOBs and as JSON text.
import { existsSync, rmSync } from 'node:fs';
import postgres from 'postgres';
import { EMBEDDING_DIMENSIONS } from './v1-normalize.ts';
import { prng } from '../prng.ts';

/** bcrypt of 'v1-password' (cost 4: quick to check), the password of every fixture user with a hash. */
export const FIXTURE_PASSWORD = 'v1-password';
const FIXTURE_HASH = '$2a$04$tMuw7E.0pvpXjBHKcLU3IOqfXbO9XQEp8GiVgBwDALQHqfEuVgjM6';

export type FixtureOptions = {
  blocks: number; canvases: number; users?: number; seed?: number;
  /** share of blocks with a valid embedding (default 0.1) */
  embedded?: number;
  /** add the anomalies listed above (default true) */
  anomalies?: boolean;
};

export type FxUser = { id: string; email: string | null; name: string | null; passwordHash: string | null; createdAt: Date };
export type FxCanvas = { id: string; ownerId: string | null; title: string | null; createdAt: Date; updatedAt: Date };
export type FxBlock = {
  id: string; canvasId: string; parentId: string | null; type: string; content: string | null; yOrder: number | null;
  createdAt: Date; createdBy: string | null; updatedAt: Date; updatedBy: string | null;
};
/** dims = 0: text that is no list of numbers; nonFinite: a NaN inside */
export type FxEmbedding = { blockId: string; seed: number; dims: number; nonFinite?: boolean; garbage?: boolean; model: string; createdAt: Date };
export type Fixture = { users: FxUser[]; canvases: FxCanvas[]; blocks: FxBlock[]; embeddings: FxEmbedding[]; sqliteOnly: boolean };


const WORDS = ['canvas', 'block', 'idea', 'plan', 'ship', 'draft', 'review', 'note', 'todo', 'roadmap', 'héllo', 'wörld', '日本語',
  'emoji 🎨', 'quote "this"', 'back\\slash', 'tab\there', 'line\nbreak', 'alpha', 'beta', 'gamma'];

export function generateFixture(opts: FixtureOptions, sqlite: boolean): Fixture {
  const rnd = prng(opts.seed ?? 17);
  const int = (n: number) => Math.floor(rnd() * n);
  const uuid = () => {
    const b = Buffer.alloc(16);
    for (let i = 0; i < 16; i++) b[i] = int(256);
    b[6] = (b[6]! & 0x0f) | 0x40;
    b[8] = (b[8]! & 0x3f) | 0x80;
    const h = b.toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
  const cuid = () => `c${Array.from({ length: 24 }, () => '0123456789abcdefghijklmnopqrstuvwxyz'[int(36)]).join('')}`;
  const anomalies = opts.anomalies ?? true;
  const nCanvases = Math.max(1, opts.canvases);
  const nUsers = Math.max(3, opts.users ?? Math.ceil(nCanvases / 3));
  const base = Date.UTC(2025, 0, 1);
  const at = (ms: number) => new Date(base + Math.floor(ms));

  const users: FxUser[] = Array.from({ length: nUsers }, (_, i) => ({
    id: sqlite && anomalies && i === 4 ? cuid() : uuid(),
    email: `user${i}@v1.example`, name: i % 5 === 3 ? null : `V1 User ${i}`,
    passwordHash: i % 2 === 0 ? FIXTURE_HASH : null, createdAt: at(i * 3_600_000 + int(1000)),
  }));
  if (anomalies) {
    users[1]!.email = 'USER0@V1.example';         // the same email as user 0, another case: user 1 moves without one
    users[2]!.passwordHash = 'md5$0f3c9d0e1e8b';   // not bcrypt: user 2 moves without a password
  }
  const canvases: FxCanvas[] = Array.from({ length: nCanvases }, (_, i) => {
    const createdAt = at(86_400_000 + i * 60_000 + int(1000));
    return {
      id: sqlite && anomalies && i === 5 ? cuid() : uuid(), ownerId: users[i % nUsers]!.id, title: `Canvas ${i}`,
      createdAt, updatedAt: new Date(createdAt.getTime() + int(86_400_000)),
    };
  });
  if (anomalies) {
    canvases[0]!.ownerId = null;
    if (nCanvases > 1) canvases[1]!.ownerId = uuid();   // not a v1 user
    if (nCanvases > 2) canvases[2]!.title = '';
    if (nCanvases > 3) canvases[3]!.title = `Long ${'title '.repeat(120)}`;
  }
  // sizes: uneven, the last canvas empty (when there are two or more)
  const filled = nCanvases > 1 ? nCanvases - 1 : 1;
  const weights = Array.from({ length: filled }, () => 0.2 + rnd() * 1.6);
  const total = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.floor((w / total) * opts.blocks));
  for (let i = 0, rest = opts.blocks - sizes.reduce((a, b) => a + b, 0); rest > 0; i = (i + 1) % filled, rest--) sizes[i]!++;

  const types = ['text', 'heading', 'todo', 'image', 'code', 'quote'];
  const blocks: FxBlock[] = [];
  for (let c = 0; c < filled; c++) {
    const canvas = canvases[c]!;
    const mine: FxBlock[] = [];
    let y = 0;
    for (let j = 0; j < sizes[c]!; j++) {
      const tie = j > 0 && rnd() < 0.05;
      y = tie ? y : Math.round((y + 0.25 + rnd() * 2) * 1000) / 1000;
      const obj: Record<string, unknown> = { text: Array.from({ length: 1 + int(8) }, () => WORDS[int(WORDS.length)]).join(' ') };
      if (rnd() < 0.3) obj.checked = rnd() < 0.5;
      if (rnd() < 0.2) obj.meta = { level: int(4), tags: ['a', 'b'].slice(0, int(3)), ratio: 1.5 };
      let content = JSON.stringify(obj);
      // digits a double cannot hold: must arrive as written
      if (rnd() < 0.02) content = `${content.slice(0, -1)},"precise":0.1000000000000000055511151231257827,"big":12345678901234567890123}`;
      const createdAt = at(canvas.createdAt.getTime() - base + j * 1000 + int(999));
      mine.push({
        id: sqlite && anomalies && rnd() < 0.01 ? cuid() : uuid(), canvasId: canvas.id,
        parentId: mine.length > 0 && rnd() < 0.35 ? mine[int(mine.length)]!.id : null,
        type: types[int(types.length)]!, content, yOrder: anomalies && rnd() < 0.01 ? null : y,
        createdAt, createdBy: canvas.ownerId, updatedAt: new Date(createdAt.getTime() + int(10_000_000)),
        updatedBy: users[int(nUsers)]!.id,
      });
    }
    blocks.push(...mine);
  }
  if (anomalies && blocks.length >= 20) {
    const pick = () => blocks[int(blocks.length)]!;
    pick().parentId = uuid();                                          // orphan parent
    const a = pick();
    const other = blocks.find((b) => b.canvasId !== a.canvasId);
    if (other) a.parentId = other.id;                                  // parent on another canvas
    const c0 = blocks.filter((b) => b.canvasId === blocks[0]!.canvasId);
    if (c0.length >= 4) { c0[2]!.parentId = c0[3]!.id; c0[3]!.parentId = c0[2]!.id; } // a 2-cycle
    pick().type = 'Heading-1';
    pick().type = '1col';
    pick().type = 'To Do';
    pick().content = null;
    pick().content = '"just a string"';
    pick().content = '[1,2,3]';
    pick().createdBy = uuid();                                         // author not a v1 user
    if (sqlite) {
      pick().content = 'not json {';
      pick().content = '{"text":"nul \\u0000 inside"}';
    }
    const missing = uuid();
    for (let k = 0; k < 4; k++) {                                      // blocks of a missing canvas
      blocks.push({ ...blocks[k]!, id: uuid(), canvasId: missing, parentId: null });
    }
  }
  // the table's row order is not the block order
  for (let i = blocks.length - 1; i > 0; i--) { const j = int(i + 1); [blocks[i], blocks[j]] = [blocks[j]!, blocks[i]!]; }

  const embeddings: FxEmbedding[] = [];
  const share = opts.embedded ?? 0.1;
  for (const b of blocks) {
    if (rnd() < share) embeddings.push({ blockId: b.id, seed: int(2 ** 31), dims: EMBEDDING_DIMENSIONS, model: 'text-embedding-3-small', createdAt: b.updatedAt });
  }
  if (anomalies && blocks.length >= 20) {
    const pick = () => blocks[int(blocks.length)]!;
    for (let k = 0; k < 3; k++) embeddings.push({ blockId: pick().id, seed: k, dims: 768, model: 'old-768', createdAt: at(0) });
    embeddings.push({ blockId: pick().id, seed: 5, dims: EMBEDDING_DIMENSIONS, nonFinite: true, model: 'm', createdAt: at(0) });
    const dup = pick();                                                // two rows: the newer (valid) one is used
    embeddings.push({ blockId: dup.id, seed: 6, dims: 100, model: 'old', createdAt: at(1000) });
    embeddings.push({ blockId: dup.id, seed: 7, dims: EMBEDDING_DIMENSIONS, model: 'text-embedding-3-small', createdAt: at(2_000_000_000) });
    for (let k = 0; k < 2; k++) embeddings.push({ blockId: uuid(), seed: 8 + k, dims: EMBEDDING_DIMENSIONS, model: 'm', createdAt: at(0) });
    if (sqlite) embeddings.push({ blockId: pick().id, seed: 11, dims: 0, garbage: true, model: 'm', createdAt: at(3_000_000_000) });
  }
  return { users, canvases, blocks, embeddings, sqliteOnly: sqlite };
}

/** An embedding's values (4 decimals, so its text stays short), from its own seed. */
export function embeddingValues(e: FxEmbedding): number[] {
  const r = prng(e.seed);
  const v = Array.from({ length: e.dims }, () => Math.round((r() * 2 - 1) * 10_000) / 10_000);
  if (e.nonFinite && v.length > 0) v[Math.min(7, v.length - 1)] = Number.NaN;
  return v;
}

const V1_POSTGRES_DDL = `
  create table "Users" (user_id uuid primary key, email text, name text, password_hash text, created_at timestamptz not null default now());
  create table "Canvas" (canvas_id uuid primary key, owner_id uuid, title text, created_at timestamptz not null default now(), updated_at timestamptz);
  create table "Blocks" (block_id uuid primary key, canvas_id uuid not null, parent_id uuid, type text not null, content jsonb,
                         y_order double precision, created_at timestamptz, created_by uuid, updated_at timestamptz, updated_by uuid);
  create index "Blocks_canvas_id_idx" on "Blocks" (canvas_id);
  create table "BlocksEmbeddings" (id bigserial primary key, block_id uuid not null, embedding double precision[] not null, model text,
                                   created_at timestamptz not null default now());`;

/** Writes the fixture into a Postgres database (created when missing; --force drops the v1 tables first). */
export async function writePostgresFixture(url: string, fx: Fixture, opts: { force?: boolean; batch?: number } = {}): Promise<void> {
  const admin = new URL(url);
  const dbName = decodeURIComponent(admin.pathname.slice(1));
  admin.pathname = '/postgres';
  const a = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    const [exists] = await a`select 1 from pg_database where datname = ${dbName}`;
    if (!exists) await a.unsafe(`create database "${dbName.replace(/"/g, '""')}"`);
  } finally { await a.end(); }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const batch = opts.batch ?? 2000;
  try {
    const [has] = await sql`select to_regclass('public."Blocks"') is not null as yes`;
    if (has?.yes) {
      if (!opts.force) throw new Error(`${dbName} already has v1 tables (use --force to replace them)`);
      await sql.unsafe('drop table if exists "Users", "Canvas", "Blocks", "BlocksEmbeddings"');
    }
    await sql.unsafe(V1_POSTGRES_DDL);
    // microseconds too: the upgrade must carry them
    const iso = (d: Date) => d.toISOString().replace('Z', '456Z');
    // every value goes as text and is cast in SQL: postgres.js would serialize a jsonb[] element as a JSON
    // string and a timestamptz[] element through Date (milliseconds)
    for (let i = 0; i < fx.users.length; i += batch) {
      const p = fx.users.slice(i, i + batch);
      await sql`insert into "Users" select id, email, name, pw, c::timestamptz
        from unnest(${p.map((u) => u.id)}::uuid[], ${p.map((u) => u.email)}::text[], ${p.map((u) => u.name)}::text[],
                    ${p.map((u) => u.passwordHash)}::text[], ${p.map((u) => iso(u.createdAt))}::text[]) as x(id, email, name, pw, c)`;
    }
    await sql`insert into "Canvas" select id, o, t, c::timestamptz, u::timestamptz
      from unnest(${fx.canvases.map((c) => c.id)}::uuid[], ${fx.canvases.map((c) => c.ownerId)}::uuid[],
                  ${fx.canvases.map((c) => c.title)}::text[], ${fx.canvases.map((c) => iso(c.createdAt))}::text[],
                  ${fx.canvases.map((c) => iso(c.updatedAt))}::text[]) as x(id, o, t, c, u)`;
    for (let i = 0; i < fx.blocks.length; i += batch) {
      const p = fx.blocks.slice(i, i + batch);
      await sql`insert into "Blocks" select id, cv, pa, ty, co::jsonb, y::float8, ca::timestamptz, cb, ua::timestamptz, ub
        from unnest(${p.map((b) => b.id)}::uuid[], ${p.map((b) => b.canvasId)}::uuid[], ${p.map((b) => b.parentId)}::uuid[],
                    ${p.map((b) => b.type)}::text[], ${p.map((b) => b.content)}::text[],
                    ${p.map((b) => (b.yOrder === null ? null : String(b.yOrder)))}::text[], ${p.map((b) => iso(b.createdAt))}::text[],
                    ${p.map((b) => b.createdBy)}::uuid[], ${p.map((b) => iso(b.updatedAt))}::text[], ${p.map((b) => b.updatedBy)}::uuid[])
          as x(id, cv, pa, ty, co, y, ca, cb, ua, ub)`;
    }
    for (let i = 0; i < fx.embeddings.length; i += 200) {
      const p = fx.embeddings.slice(i, i + 200);
      await sql`insert into "BlocksEmbeddings" (block_id, embedding, model, created_at)
        select b, e::float8[], m, c::timestamptz from unnest(${p.map((e) => e.blockId)}::uuid[],
          ${p.map((e) => `{${embeddingValues(e).map((v) => (Number.isNaN(v) ? 'NaN' : String(v))).join(',')}}`)}::text[],
          ${p.map((e) => e.model)}::text[], ${p.map((e) => iso(e.createdAt))}::text[]) as x(b, e, m, c)`;
    }
    await sql`analyze`;
  } finally { await sql.end(); }
}

/** Writes the fixture as a Prisma-style SQLite file: camelCase columns, DateTime as milliseconds, Json as text, Bytes as BLOB. */
export async function writeSqliteFixture(path: string, fx: Fixture, opts: { force?: boolean } = {}): Promise<void> {
  if (existsSync(path)) {
    if (!opts.force) throw new Error(`${path} exists (use --force to replace it)`);
    rmSync(path);
  }
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.exec(`
      CREATE TABLE "Users" ("userId" TEXT NOT NULL PRIMARY KEY, "email" TEXT, "name" TEXT, "passwordHash" TEXT,
                            "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);
      CREATE TABLE "Canvas" ("canvasId" TEXT NOT NULL PRIMARY KEY, "ownerId" TEXT, "title" TEXT,
                             "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" DATETIME);
      CREATE TABLE "Blocks" ("blockId" TEXT NOT NULL PRIMARY KEY, "canvasId" TEXT NOT NULL, "parentId" TEXT, "type" TEXT NOT NULL,
                             "content" TEXT, "yOrder" REAL, "createdAt" DATETIME, "createdBy" TEXT, "updatedAt" DATETIME, "updatedBy" TEXT);
      CREATE INDEX "Blocks_canvasId_idx" ON "Blocks"("canvasId");
      CREATE TABLE "BlocksEmbeddings" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "blockId" TEXT NOT NULL, "embedding" BLOB NOT NULL,
                                       "model" TEXT, "createdAt" DATETIME NOT NULL);`);
    const ms = (d: Date) => d.getTime();
    db.transaction(() => {
      const u = db.prepare('INSERT INTO "Users" VALUES (?, ?, ?, ?, ?)');
      for (const x of fx.users) u.run(x.id, x.email, x.name, x.passwordHash, ms(x.createdAt));
      const c = db.prepare('INSERT INTO "Canvas" VALUES (?, ?, ?, ?, ?)');
      for (const x of fx.canvases) c.run(x.id, x.ownerId, x.title, ms(x.createdAt), ms(x.updatedAt));
      const b = db.prepare('INSERT INTO "Blocks" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
      for (const x of fx.blocks) {
        b.run(x.id, x.canvasId, x.parentId, x.type, x.content, x.yOrder, ms(x.createdAt), x.createdBy, ms(x.updatedAt), x.updatedBy);
      }
      const e = db.prepare('INSERT INTO "BlocksEmbeddings" ("blockId", "embedding", "model", "createdAt") VALUES (?, ?, ?, ?)');
      fx.embeddings.forEach((x, i) => {
        const values = embeddingValues(x);
        // Prisma Bytes (float32) mostly; every third one as JSON text, as some v1 writers stored it
        const stored = x.garbage ? 'oops, not numbers' : i % 3 === 2 && !x.nonFinite ? JSON.stringify(values)
          : Buffer.from(Float32Array.from(values).buffer);
        e.run(x.blockId, stored, x.model, ms(x.createdAt));
      });
    })();
  } finally { db.close(); }
}

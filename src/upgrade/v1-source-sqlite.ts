// Reads a flowwave-style v1 SQLite file (Prisma; docs/upgrade-v1.md, "The v1 shape") with
// better-sqlite3, read-only. SQLite types are per value: ids are read as text, y_order as a
// number (a REAL is a double, so JavaScript compares it exactly; numeric text is read as its
// number, anything else counts as missing), times as Prisma writes them (milliseconds since 1970)
// or as date text, content as JSON text, embeddings as BLOBs (float32) or JSON text.
import { compareV1Order, canonicalTime } from './v1-normalize.ts';
import {
  resolveColumns, V1_TABLES, type ResolvedTable, type V1Block, type V1Canvas, type V1CanvasBlocks, type V1Source, type V1User,
} from './v1-shape.ts';

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

const asText = (v: unknown): string | null =>
  v === null || v === undefined ? null : Buffer.isBuffer(v) ? v.toString('utf8') : String(v);

/** y_order as a number, or null when missing or not a number. */
function orderNumber(v: unknown): number | null {
  if (typeof v === 'number') return Number.isFinite(v) || Math.abs(v) === Infinity ? v : null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(v)) return Number(v);
  return null;
}

export async function openSqliteSource(path: string): Promise<V1Source> {
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const tables = (db.prepare(`select name from sqlite_master where type = 'table'`).all() as { name: string }[]).map((r) => r.name);
    const resolve = (key: keyof typeof V1_TABLES): ResolvedTable & { realTable: string } => {
      const real = tables.find((n) => n === V1_TABLES[key].table) ?? tables.find((n) => n.toLowerCase() === V1_TABLES[key].table.toLowerCase());
      const cols = real ? (db.prepare(`pragma table_info(${ident(real)})`).all() as { name: string }[]).map((c) => c.name) : null;
      return { ...resolveColumns(V1_TABLES[key], cols), realTable: real ?? V1_TABLES[key].table };
    };
    const t = { users: resolve('users'), canvases: resolve('canvases'), blocks: resolve('blocks'), embeddings: resolve('embeddings') };
    const col = (r: ResolvedTable, field: string, alias = '') => (r.columns[field] ? `${alias}${ident(r.columns[field]!)}` : 'null');
    const idText = (r: ResolvedTable, field: string, alias = '') => `cast(${col(r, field, alias)} as text)`;

    const e = t.embeddings;
    const embeddingsCte = e.present
      ? `select ${idText(e, 'blockId')} as block_id, ${col(e, 'embedding')} as embedding, ${col(e, 'model')} as model,
                ${col(e, 'createdAt')} as created_at,
                count(*) over (partition by ${idText(e, 'blockId')}) as n,
                row_number() over (partition by ${idText(e, 'blockId')} order by ${col(e, 'createdAt')} desc nulls last, rowid desc) as rn
         from ${ident(e.realTable)}`
      : 'select null as block_id, null as embedding, null as model, null as created_at, 0 as n, 1 as rn where 0';
    const blocksQuery = `
      with e as materialized (${embeddingsCte})
      select ${idText(t.blocks, 'id', 'b.')} as id, ${idText(t.blocks, 'canvasId', 'b.')} as canvas_id,
             ${idText(t.blocks, 'parentId', 'b.')} as parent_id, ${col(t.blocks, 'type', 'b.')} as type,
             ${col(t.blocks, 'content', 'b.')} as content, ${col(t.blocks, 'yOrder', 'b.')} as y_order,
             ${col(t.blocks, 'createdAt', 'b.')} as created_at, ${idText(t.blocks, 'createdBy', 'b.')} as created_by,
             ${col(t.blocks, 'updatedAt', 'b.')} as updated_at, ${idText(t.blocks, 'updatedBy', 'b.')} as updated_by,
             e.embedding, e.model as embedding_model, e.created_at as embedding_created_at, e.n as embedding_rows
      from ${ident(t.blocks.realTable)} b left join e on e.block_id = ${idText(t.blocks, 'id', 'b.')} and e.rn = 1
      order by ${idText(t.blocks, 'canvasId', 'b.')}`;

    const finishGroup = (group: V1CanvasBlocks & { orders: Map<V1Block, number | null> }): V1CanvasBlocks => {
      const keyed = group.blocks.map((b) => ({ b, order: group.orders.get(b) ?? null, id: b.id }));
      keyed.sort(compareV1Order);
      return { canvasId: group.canvasId, blocks: keyed.map((k) => k.b) };
    };

    return {
      kind: 'sqlite',
      label: `sqlite ${path}`,
      async users() {
        const r = t.users;
        const rows = db.prepare(`select ${idText(r, 'id')} as id, ${col(r, 'email')} as email, ${col(r, 'name')} as name,
          ${col(r, 'passwordHash')} as password_hash, ${col(r, 'createdAt')} as created_at from ${ident(r.realTable)}
          order by 1`).all() as Record<string, unknown>[];
        return rows.map((u): V1User => ({
          id: asText(u.id)!, email: asText(u.email), name: asText(u.name), passwordHash: asText(u.password_hash),
          createdAt: canonicalTime(u.created_at),
        }));
      },
      async canvases() {
        const r = t.canvases;
        const rows = db.prepare(`select ${idText(r, 'id')} as id, ${idText(r, 'ownerId')} as owner_id, ${col(r, 'title')} as title,
          ${col(r, 'createdAt')} as created_at, ${col(r, 'updatedAt')} as updated_at from ${ident(r.realTable)}
          order by 1`).all() as Record<string, unknown>[];
        return rows.map((c): V1Canvas => ({
          id: asText(c.id)!, ownerId: asText(c.owner_id), title: asText(c.title),
          createdAt: canonicalTime(c.created_at), updatedAt: canonicalTime(c.updated_at),
        }));
      },
      async *blocksByCanvas(): AsyncIterable<V1CanvasBlocks> {
        let current: (V1CanvasBlocks & { orders: Map<V1Block, number | null> }) | null = null;
        for (const row of db.prepare(blocksQuery).iterate() as Iterable<Record<string, unknown>>) {
          const order = orderNumber(row.y_order);
          const rawEmbedding = row.embedding;
          const block: V1Block = {
            id: asText(row.id)!, canvasId: asText(row.canvas_id) ?? '', parentId: asText(row.parent_id), type: asText(row.type),
            content: asText(row.content), yOrder: asText(row.y_order), orderKey: order === null ? null : String(order),
            createdAt: canonicalTime(row.created_at), createdBy: asText(row.created_by),
            updatedAt: canonicalTime(row.updated_at), updatedBy: asText(row.updated_by),
            embedding: Number(row.embedding_rows ?? 0) > 0
              ? {
                  raw: rawEmbedding === null || rawEmbedding === undefined ? null
                    : Buffer.isBuffer(rawEmbedding) ? rawEmbedding : String(rawEmbedding),
                  model: asText(row.embedding_model), createdAt: canonicalTime(row.embedding_created_at), rows: Number(row.embedding_rows),
                }
              : null,
          };
          if (current === null || current.canvasId !== block.canvasId) {
            if (current !== null) yield finishGroup(current);
            current = { canvasId: block.canvasId, blocks: [], orders: new Map() };
          }
          current.blocks.push(block);
          current.orders.set(block, order);
        }
        if (current !== null) yield finishGroup(current);
      },
      async blockCount() {
        return (db.prepare(`select count(*) as n from ${ident(t.blocks.realTable)}`).get() as { n: number }).n;
      },
      async embeddingsOfMissingBlocks() {
        if (!e.present) return 0;
        const row = db.prepare(`select count(*) as n from ${ident(e.realTable)} x where not exists
          (select 1 from ${ident(t.blocks.realTable)} b where ${idText(t.blocks, 'id', 'b.')} = ${idText(e, 'blockId', 'x.')})`).get() as { n: number };
        return row.n;
      },
      async close() { db.close(); },
    };
  } catch (err) {
    db.close();
    throw err;
  }
}

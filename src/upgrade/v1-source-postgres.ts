// Reads a v1 Postgres database (docs/upgrade-v1.md, "The v1 shape"). Blocks are sorted by the
// source itself, so y_order is compared exactly as v1 stored it (numeric, float, integer, or
// numeric text), whatever its precision; times are read in UTC with microseconds; the latest
// embedding row of a block is joined to it (by created_at, then physical order).
import postgres from 'postgres';
import { postgresLabel } from '../url-redaction.ts';
import { canonicalTime } from './v1-normalize.ts';
import {
  resolveColumns, V1_TABLES, type ResolvedTable, type V1Block, type V1Canvas, type V1CanvasBlocks, type V1Source, type V1User,
} from './v1-shape.ts';

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
const TIME_TYPES = new Set(['timestamp with time zone', 'timestamp without time zone', 'date']);

export async function openPostgresSource(url: string, schema = 'public'): Promise<V1Source> {
  // UTC: a v1 `timestamp` without a zone is read as UTC
  const sql = postgres(url, { max: 2, onnotice: () => {}, connection: { TimeZone: 'UTC', application_name: 'potentia-upgrade-v1-source' } });
  try {
    const rows = await sql<{ table_name: string; column_name: string; data_type: string }[]>`
      select table_name, column_name, data_type from information_schema.columns
      where table_schema = ${schema} order by table_name, ordinal_position`;
    const columnsOf = (table: string) => {
      const exact = rows.filter((r) => r.table_name === table);
      return exact.length > 0 ? exact : rows.filter((r) => r.table_name.toLowerCase() === table.toLowerCase());
    };
    const typeOf = new Map(rows.map((r) => [`${r.table_name}.${r.column_name}`, r.data_type]));
    const resolve = (key: keyof typeof V1_TABLES): ResolvedTable & { realTable: string } => {
      const cols = columnsOf(V1_TABLES[key].table);
      const resolved = resolveColumns(V1_TABLES[key], cols.length > 0 ? cols.map((c) => c.column_name) : null);
      return { ...resolved, realTable: cols[0]?.table_name ?? V1_TABLES[key].table };
    };
    const t = { users: resolve('users'), canvases: resolve('canvases'), blocks: resolve('blocks'), embeddings: resolve('embeddings') };
    const table = (r: { realTable: string }) => `${ident(schema)}.${ident(r.realTable)}`;
    const text = (r: ResolvedTable, field: string, alias = '') => {
      const c = r.columns[field];
      return c ? `${alias}${ident(c)}::text` : 'null::text';
    };
    const time = (r: ResolvedTable & { realTable: string }, field: string, alias = '') => {
      const c = r.columns[field];
      if (!c) return 'null::text';
      return TIME_TYPES.has(typeOf.get(`${r.realTable}.${c}`) ?? '')
        ? `to_char(${alias}${ident(c)}::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
        : `${alias}${ident(c)}::text`;
    };
    // y_order as v1 compared it: NaN counts as missing, and numeric text is compared as a number
    const yCol = `b.${ident(t.blocks.columns.yOrder!)}`;
    const yType = typeOf.get(`${t.blocks.realTable}.${t.blocks.columns.yOrder}`) ?? '';
    const orderExpr = ['real', 'double precision', 'numeric'].includes(yType) ? `nullif(${yCol}, 'NaN')`
      : ['smallint', 'integer', 'bigint'].includes(yType) ? yCol
      : ['text', 'character varying', 'character'].includes(yType)
        ? `(case when ${yCol} ~ '^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?\\s*$' then ${yCol}::numeric end)`
        : null;
    if (orderExpr === null) throw new Error(`v1 "Blocks".y_order has type ${yType}: a number type is expected (docs/upgrade-v1.md)`);

    const e = t.embeddings;
    const embeddingsCte = e.present
      ? `select ${text(e, 'blockId')} as block_id, ${text(e, 'embedding')} as embedding, ${text(e, 'model')} as model,
                ${time(e, 'createdAt')} as created_at,
                count(*) over (partition by ${text(e, 'blockId')}) as n,
                row_number() over (partition by ${text(e, 'blockId')}
                                   order by ${e.columns.createdAt ? ident(e.columns.createdAt) : 'null::text'} desc nulls last, ctid desc) as rn
         from ${table(e)}`
      : 'select null::text as block_id, null::text as embedding, null::text as model, null::text as created_at, 0::bigint as n, 1::bigint as rn where false';
    const blocksQuery = `
      with e as (${embeddingsCte})
      select ${text(t.blocks, 'id', 'b.')} as id, ${text(t.blocks, 'canvasId', 'b.')} as canvas_id,
             ${text(t.blocks, 'parentId', 'b.')} as parent_id, ${text(t.blocks, 'type', 'b.')} as type,
             ${text(t.blocks, 'content', 'b.')} as content, ${text(t.blocks, 'yOrder', 'b.')} as y_order,
             (${orderExpr})::text as order_key,
             ${time(t.blocks, 'createdAt', 'b.')} as created_at, ${text(t.blocks, 'createdBy', 'b.')} as created_by,
             ${time(t.blocks, 'updatedAt', 'b.')} as updated_at, ${text(t.blocks, 'updatedBy', 'b.')} as updated_by,
             e.embedding, e.model as embedding_model, e.created_at as embedding_created_at, e.n::int as embedding_rows
      from ${table(t.blocks)} b left join e on e.block_id = ${text(t.blocks, 'id', 'b.')} and e.rn = 1
      order by ${text(t.blocks, 'canvasId', 'b.')} collate "C", ${orderExpr} nulls last, ${text(t.blocks, 'id', 'b.')} collate "C"`;

    return {
      kind: 'postgres',
      label: postgresLabel(url),
      async users() {
        const r = t.users;
        const out = await sql.unsafe(`select ${text(r, 'id')} as id, ${text(r, 'email')} as email, ${text(r, 'name')} as name,
          ${text(r, 'passwordHash')} as password_hash, ${time(r, 'createdAt')} as created_at from ${table(r)} order by 1`);
        return out.map((u): V1User => ({
          id: u.id, email: u.email, name: u.name, passwordHash: u.password_hash, createdAt: canonicalTime(u.created_at),
        }));
      },
      async canvases() {
        const r = t.canvases;
        const out = await sql.unsafe(`select ${text(r, 'id')} as id, ${text(r, 'ownerId')} as owner_id, ${text(r, 'title')} as title,
          ${time(r, 'createdAt')} as created_at, ${time(r, 'updatedAt')} as updated_at from ${table(r)} order by 1`);
        return out.map((c): V1Canvas => ({
          id: c.id, ownerId: c.owner_id, title: c.title, createdAt: canonicalTime(c.created_at), updatedAt: canonicalTime(c.updated_at),
        }));
      },
      async *blocksByCanvas(): AsyncIterable<V1CanvasBlocks> {
        let current: V1CanvasBlocks | null = null;
        for await (const batch of sql.unsafe(blocksQuery).cursor(2000)) {
          for (const row of batch) {
            const block: V1Block = {
              id: row.id, canvasId: row.canvas_id, parentId: row.parent_id, type: row.type, content: row.content,
              yOrder: row.y_order, orderKey: row.order_key,
              createdAt: canonicalTime(row.created_at), createdBy: row.created_by,
              updatedAt: canonicalTime(row.updated_at), updatedBy: row.updated_by,
              embedding: row.embedding_rows > 0 || row.embedding !== null
                ? { raw: row.embedding, model: row.embedding_model, createdAt: canonicalTime(row.embedding_created_at), rows: Number(row.embedding_rows) }
                : null,
            };
            if (current === null || current.canvasId !== block.canvasId) {
              if (current !== null) yield current;
              current = { canvasId: block.canvasId, blocks: [] };
            }
            current.blocks.push(block);
          }
        }
        if (current !== null) yield current;
      },
      async blockCount() {
        const [row] = await sql.unsafe(`select count(*)::int as n from ${table(t.blocks)}`);
        return row!.n as number;
      },
      async embeddingsOfMissingBlocks() {
        if (!e.present) return 0;
        const [row] = await sql.unsafe(`select count(*)::int as n from ${table(e)} x
          where not exists (select from ${table(t.blocks)} b where ${text(t.blocks, 'id', 'b.')} = ${text(e, 'blockId', 'x.')})`);
        return row!.n as number;
      },
      close: () => sql.end({ timeout: 5 }),
    };
  } catch (err) {
    await sql.end({ timeout: 5 });
    throw err;
  }
}

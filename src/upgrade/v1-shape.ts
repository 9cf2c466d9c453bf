// The v1 shape the upgrade reads (docs/upgrade-v1.md, "The v1 shape"): four tables, the same
// names in a v1 Postgres database (schema public) and in a flowwave-style SQLite file (Prisma):
// "Users", "Canvas", "Blocks" and, optionally, "BlocksEmbeddings". Each logical column lists the
// names it may have (the snake_case of the v1 SQL, then Prisma's camelCase); the first present
// wins. Optional columns may be missing: their values are then unknown (null).

export type ColumnSpec = { names: string[]; required: boolean };
export type TableSpec = { table: string; required: boolean; columns: Record<string, ColumnSpec> };

const req = (...names: string[]): ColumnSpec => ({ names, required: true });
const opt = (...names: string[]): ColumnSpec => ({ names, required: false });

export const V1_TABLES = {
  users: {
    table: 'Users', required: true,
    columns: {
      id: req('user_id', 'userId', 'id'),
      email: opt('email'),
      name: opt('name', 'full_name', 'fullName', 'display_name', 'displayName'),
      passwordHash: opt('password_hash', 'passwordHash', 'hashed_password', 'hashedPassword'),
      createdAt: opt('created_at', 'createdAt'),
    },
  },
  canvases: {
    table: 'Canvas', required: true,
    columns: {
      id: req('canvas_id', 'canvasId', 'id'),
      ownerId: opt('owner_id', 'ownerId', 'user_id', 'userId', 'created_by', 'createdBy'),
      title: opt('title', 'name'),
      createdAt: opt('created_at', 'createdAt'),
      updatedAt: opt('updated_at', 'updatedAt'),
    },
  },
  blocks: {
    table: 'Blocks', required: true,
    columns: {
      id: req('block_id', 'blockId', 'id'),
      canvasId: req('canvas_id', 'canvasId'),
      parentId: opt('parent_id', 'parentId'),
      type: req('type'),
      content: req('content'),
      yOrder: req('y_order', 'yOrder'),
      createdAt: opt('created_at', 'createdAt'),
      createdBy: opt('created_by', 'createdBy'),
      updatedAt: opt('updated_at', 'updatedAt'),
      updatedBy: opt('updated_by', 'updatedBy'),
    },
  },
  embeddings: {
    table: 'BlocksEmbeddings', required: false,
    columns: {
      blockId: req('block_id', 'blockId'),
      embedding: req('embedding', 'vector'),
      model: opt('model', 'embedding_model', 'embeddingModel'),
      createdAt: opt('created_at', 'createdAt'),
    },
  },
} satisfies Record<string, TableSpec>;

export type V1TableKey = keyof typeof V1_TABLES;
/** Per logical column, the actual column name (or null when the optional column is absent). */
export type ResolvedTable = { table: string; present: boolean; columns: Record<string, string | null> };

/**
 * Maps a table's actual column names onto the spec: exact name first, then case-insensitively.
 * Throws naming the table and the column when a required one is missing.
 */
export function resolveColumns(spec: TableSpec, actual: string[] | null): ResolvedTable {
  if (actual === null || actual.length === 0) {
    if (spec.required) throw new Error(`v1 table "${spec.table}" not found (docs/upgrade-v1.md, "The v1 shape")`);
    return { table: spec.table, present: false, columns: {} };
  }
  const columns: Record<string, string | null> = {};
  for (const [field, col] of Object.entries(spec.columns)) {
    const found = col.names.find((n) => actual.includes(n))
      ?? col.names.map((n) => actual.find((a) => a.toLowerCase() === n.toLowerCase())).find((a) => a !== undefined)
      ?? null;
    if (found === null && col.required) {
      throw new Error(`v1 table "${spec.table}" has no column ${col.names.map((n) => `"${n}"`).join(' or ')} ` +
        '(docs/upgrade-v1.md, "The v1 shape")');
    }
    columns[field] = found;
  }
  return { table: spec.table, present: true, columns };
}

/** A v1 user as read (ids as text, times as ISO strings with microseconds, or null). */
export type V1User = {
  id: string; email: string | null; name: string | null; passwordHash: string | null; createdAt: string | null;
};
export type V1Canvas = { id: string; ownerId: string | null; title: string | null; createdAt: string | null; updatedAt: string | null };

/** A v1 embedding as read: its text form (Postgres array/vector/json text, SQLite JSON text) or bytes (SQLite BLOB). */
export type V1Embedding = { raw: string | Buffer | null; model: string | null; createdAt: string | null; rows: number };

/**
 * A v1 block as read. `orderKey` is y_order as the source compared it (text of a number), null
 * when y_order is missing or not a number; blocks of a canvas arrive sorted by the v1 order rule.
 */
export type V1Block = {
  id: string; canvasId: string; parentId: string | null; type: string | null;
  /** content as JSON text, or null */
  content: string | null;
  yOrder: string | null; orderKey: string | null;
  createdAt: string | null; createdBy: string | null; updatedAt: string | null; updatedBy: string | null;
  embedding: V1Embedding | null;
};

/** One v1 canvas id with its blocks in v1 order. */
export type V1CanvasBlocks = { canvasId: string; blocks: V1Block[] };

export interface V1Source {
  readonly kind: 'postgres' | 'sqlite';
  /** where it reads from, for the report (no password) */
  readonly label: string;
  users(): Promise<V1User[]>;
  canvases(): Promise<V1Canvas[]>;
  /** Blocks grouped by canvas id (canvas ids in text order), each group in v1 order (y_order, id). */
  blocksByCanvas(): AsyncIterable<V1CanvasBlocks>;
  /** Rows of "Blocks" (for progress lines). */
  blockCount(): Promise<number>;
  /** Embedding rows whose block is not in "Blocks". */
  embeddingsOfMissingBlocks(): Promise<number>;
  close(): Promise<void>;
}

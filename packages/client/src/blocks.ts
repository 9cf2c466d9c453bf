import type { WireBlock } from './protocol.ts';
import { isObject } from './json-value.ts';

/**
 * Blocks as the client shows them, and the pure helpers of the optimistic state: JSON Merge
 * Patch, local LexoRank-style keys, the ordered tree, and which fields two versions differ in.
 */

/**
 * One block of a canvas. Blocks form a tree (`parent_id`, null at the top) and are ordered by
 * `y_order`, one key space for the whole canvas (byte order; siblings are shown in that order).
 * A block created optimistically has `version` 0 and null `created_*` / `updated_*` until the
 * server's copy replaces it.
 */
export type Block = {
  block_id: string;
  canvas_id: string;
  parent_id: string | null;
  /** `^[a-z][a-z0-9_]{0,39}$`, e.g. `text`, `heading`. */
  type: string;
  /** Any JSON object; text edited with editText lives under its keys as strings. */
  content: Record<string, unknown>;
  /** LexoRank key (base-62 digits, byte order). */
  y_order: string;
  /** Incremented by every applied change; 0 while only optimistic. */
  version: number;
  created_at: string | null;
  created_by: string | null;
  updated_at: string | null;
  updated_by: string | null;
};

/** A block in the tree: its children in `y_order` order. */
export type BlockNode = Block & { children: BlockNode[] };

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/** The client's Block from a block as the server sends it. */
export function toBlock(b: WireBlock): Block {
  return {
    block_id: b.block_id,
    canvas_id: str(b['canvas_id']) ?? '',
    parent_id: str(b['parent_id']),
    type: str(b['type']) ?? '',
    content: isObject(b['content']) ? b['content'] : {},
    y_order: str(b['y_order']) ?? '',
    version: b.version,
    created_at: str(b['created_at']),
    created_by: str(b['created_by']),
    updated_at: str(b['updated_at']),
    updated_by: str(b['updated_by']),
  };
}

/**
 * RFC 7396 JSON Merge Patch, as the server applies `patch.content` (null removes, objects merge
 * recursively). Every key is an ordinary member, `__proto__` included (JSON.parse and jsonb keep
 * it as one): members are defined, not assigned, since `out.__proto__ = v` would set the result's
 * prototype and lose the key.
 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else setMember(out, k, mergePatch(Object.hasOwn(out, k) ? out[k] : undefined, v));
  }
  return out;
}

/** Sets `key` as an own enumerable member of `obj`, as JSON.parse would, whatever the key. */
export function setMember(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const digit = (c: string | undefined): number => (c === undefined ? 0 : Math.max(0, DIGITS.indexOf(c)));

/**
 * A key strictly between `lo` and `hi` in byte order (null: unbounded), made of base-62 digits —
 * for showing an optimistic block in place until the server's own key arrives. Keys are read as
 * base-62 fractions. Falls back to just after `lo` if the bounds are not ordered.
 */
export function keyBetween(lo: string | null, hi: string | null): string {
  const a = lo ?? '';
  if (hi !== null && !(a < hi)) return `${a}V`;
  let prefix = '';
  let bounded = hi !== null;
  for (let i = 0; i < a.length + (hi?.length ?? 0) + 2; i++) {
    const da = digit(a[i]);
    const db = bounded ? digit(hi![i]) : 62;
    if (db - da > 1) return prefix + DIGITS[(da + db) >> 1];
    prefix += DIGITS[da];
    // db is da or da + 1: with da + 1, anything above the rest of `a` stays below `hi`
    if (db !== da) bounded = false;
  }
  return `${a}V`;
}

/** Compares siblings: by y_order (byte order), then block_id, as the server lists them. */
export function compareBlocks(x: Block, y: Block): number {
  if (x.y_order !== y.y_order) return x.y_order < y.y_order ? -1 : 1;
  return x.block_id < y.block_id ? -1 : x.block_id > y.block_id ? 1 : 0;
}

/**
 * The ordered tree of `blocks`: roots (parent_id null, or a parent that is not there) and every
 * node's children sorted by compareBlocks. A cycle (never from the server) is cut at a root.
 */
export function buildTree(blocks: Iterable<Block>): BlockNode[] {
  const nodes = new Map<string, BlockNode>();
  for (const b of blocks) nodes.set(b.block_id, { ...b, children: [] });
  const roots: BlockNode[] = [];
  const attachedTo = new Map<BlockNode, BlockNode>(); // child → parent, a forest at every step
  const reaches = (from: BlockNode, to: BlockNode) => {
    for (let cur: BlockNode | undefined = from; cur; cur = attachedTo.get(cur)) if (cur === to) return true;
    return false;
  };
  for (const node of nodes.values()) {
    const parent = node.parent_id ? nodes.get(node.parent_id) : undefined;
    if (parent && !reaches(parent, node)) {
      parent.children.push(node);
      attachedTo.set(node, parent);
    } else {
      roots.push(node);
    }
  }
  const sort = (list: BlockNode[]) => {
    list.sort(compareBlocks);
    for (const n of list) sort(n.children);
  };
  sort(roots);
  return roots;
}

/** The ids of `id` and every block under it in `blocks`. */
export function subtree(blocks: ReadonlyMap<string, Block>, id: string): Set<string> {
  const out = new Set<string>([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const b of blocks.values()) {
      if (b.parent_id && out.has(b.parent_id) && !out.has(b.block_id)) {
        out.add(b.block_id);
        grew = true;
      }
    }
  }
  return out;
}

/** Deep equality of JSON values. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * The fields (the server's merge fields: `content.<key>`, `type`, `parent`, `position`) in which
 * two versions of a block differ; every field when one of them is missing.
 */
export function changedFields(before: Block | undefined, after: Block | undefined): Set<string> | 'all' {
  if (!before || !after) return 'all';
  const out = new Set<string>();
  for (const k of new Set([...Object.keys(before.content), ...Object.keys(after.content)])) {
    if (!jsonEqual(before.content[k], after.content[k])) out.add(`content.${k}`);
  }
  if (before.type !== after.type) out.add('type');
  if (before.parent_id !== after.parent_id) out.add('parent');
  if (before.y_order !== after.y_order) out.add('position');
  return out;
}

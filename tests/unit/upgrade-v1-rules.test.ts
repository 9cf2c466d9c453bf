import { describe, expect, it } from 'vitest';
import { uuidV5, v2Id } from '../../src/upgrade/v1-ids.ts';
import {
  canonicalJson, canonicalTime, compareV1Order, normalizeContent, normalizePasswordHash, normalizeTitle, normalizeType, parseEmbedding,
  vectorLiteral,
} from '../../src/upgrade/v1-normalize.ts';
import { planCanvasBlocks } from '../../src/upgrade/v1-plan.ts';
import type { V1Block } from '../../src/upgrade/v1-shape.ts';

// The v1 → v2 rules of docs/upgrade-v1.md ("What changes on the way"), one by one.

describe('v1 upgrade rules', () => {
  it('ids: uuids kept lower-cased, others name-based (RFC 4122 v5)', () => {
    // RFC 4122's example: www.example.com in the DNS namespace
    expect(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'www.example.com')).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
    expect(v2Id('block', 'A1B2C3D4-0000-4000-8000-000000000001')).toBe('a1b2c3d4-0000-4000-8000-000000000001');
    expect(v2Id('block', 'ckabc')).toBe(v2Id('block', 'ckabc'));
    expect(v2Id('block', 'ckabc')).not.toBe(v2Id('canvas', 'ckabc'));
  });

  it('types, titles, passwords', () => {
    expect(normalizeType('text')).toEqual({ type: 'text', changed: false });
    expect(normalizeType('Heading-1')).toEqual({ type: 'heading_1', changed: true });
    expect(normalizeType('1col')).toEqual({ type: 'b_1col', changed: true });
    expect(normalizeType('')).toEqual({ type: 'text', changed: true });
    expect(normalizeType('x'.repeat(50)).type).toHaveLength(40);
    expect(normalizeTitle('  ')).toEqual({ title: 'Untitled', changed: true });
    expect(Array.from(normalizeTitle('é'.repeat(600)).title)).toHaveLength(500);
    expect(normalizePasswordHash(`$2b$10$${'a'.repeat(53)}`)).toEqual({ hash: `$2a$10$${'a'.repeat(53)}`, unusable: false });
    expect(normalizePasswordHash('md5$abc')).toEqual({ hash: null, unusable: true });
  });

  it('content: objects pass through as written, anything else is wrapped', () => {
    const precise = '{"x": 0.1000000000000000055511151231257827, "big": 12345678901234567890123}';
    expect(normalizeContent(precise)).toEqual({ json: precise, issue: null });
    expect(normalizeContent(null)).toEqual({ json: '{}', issue: 'null' });
    expect(normalizeContent('"hi"')).toEqual({ json: '{"text":"hi"}', issue: 'not_object' });
    expect(normalizeContent('[1]')).toEqual({ json: '{"value":[1]}', issue: 'not_object' });
    expect(normalizeContent('not json')).toEqual({ json: '{"text":"not json"}', issue: 'invalid_json' });
    expect(normalizeContent('{"a":"x\\u0000y"}')).toEqual({ json: '{"a":"xy"}', issue: 'nul_removed' });
    expect(canonicalJson('{"b": 1, "a": {"d": [1, 2], "c": null}}')).toBe('{"a":{"c":null,"d":[1,2]},"b":1}');
  });

  it('embeddings: 1536 finite numbers from any v1 form, float32 bits kept', () => {
    const values = Array.from({ length: 1536 }, (_, i) => (i === 3 ? -0 : i / 7));
    const f32 = Float32Array.from(values);
    const text = values.map((v) => (Object.is(v, -0) ? '-0' : String(v))); // as Postgres prints a float8[]
    for (const raw of [`{${text.join(',')}}`, `[${text.join(', ')}]`, Buffer.from(f32.buffer)]) {
      const parsed = parseEmbedding(raw);
      expect('values' in parsed && Buffer.from(parsed.values.buffer).equals(Buffer.from(f32.buffer))).toBe(true);
    }
    expect(vectorLiteral(f32).split(',')[3]).toBe('-0');
    expect(parseEmbedding('[1,2,3]')).toEqual({ problem: 'dimensions', dims: 3 });
    expect(parseEmbedding(`{${[...values.slice(1), 'NaN'].join(',')}}`)).toEqual({ problem: 'non_finite' });
    expect(parseEmbedding('oops')).toEqual({ problem: 'unparseable' });
  });

  it('times: UTC with microseconds, from Prisma milliseconds, seconds or text', () => {
    expect(canonicalTime(1735689600123)).toBe('2025-01-01T00:00:00.123000Z');
    expect(canonicalTime(1735689600)).toBe('2025-01-01T00:00:00.000000Z');
    expect(canonicalTime('2025-01-01 00:00:00')).toBe('2025-01-01T00:00:00.000000Z');
    expect(canonicalTime('2025-01-01T00:00:00.123456Z')).toBe('2025-01-01T00:00:00.123456Z');
    expect(canonicalTime('garbage')).toBeNull();
  });

  it('order: y_order ascending, missing last, ties by id bytewise', () => {
    const blocks = [
      { order: null, id: 'a' }, { order: 2, id: 'b' }, { order: 1, id: 'z' }, { order: 1, id: 'Z' }, { order: -1, id: 'm' },
    ];
    expect([...blocks].sort(compareV1Order).map((b) => b.id)).toEqual(['m', 'Z', 'z', 'b', 'a']);
  });

  it('a canvas: orphan parents and cycles to the top level, creates parents first', () => {
    const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
    const block = (n: number, parent: number | null): V1Block => ({
      id: id(n), canvasId: 'c', parentId: parent === null ? null : id(parent), type: 'text', content: '{}', yOrder: String(n),
      orderKey: String(n), createdAt: null, createdBy: null, updatedAt: null, updatedBy: null, embedding: null,
    });
    // in v1 order: 1; 2 child of 5 (later in order); 3 orphan; 4 ↔ 6 cycle; 5 top level
    const plan = planCanvasBlocks([block(1, null), block(2, 5), block(3, 99), block(4, 6), block(5, null), block(6, 4)], new Map());
    expect(plan.blocks.map((b) => b.parentId)).toEqual([null, id(5), null, null, null, id(4)]);
    expect(plan.counts.get('blocks.parent_not_on_canvas')).toBe(1);
    expect(plan.counts.get('blocks.parent_cycle')).toBe(1);
    // depth first, siblings in v1 order: 1, 3, 4, 6 (child of 4), 5, 2 (child of 5)
    expect(plan.operations.map((b) => b.v1Id)).toEqual([1, 3, 4, 6, 5, 2].map(id));
    expect(plan.operations.map((b) => b.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DATABASE_EVENTS, isDatabaseEvent } from '../../src/realtime/database-events.ts';

// The gateway refuses client broadcasts of the events the database sends on a canvas channel
// (src/realtime/database-events.ts): the list must hold every event sql/ sends there, or a new one
// could be forged by any member.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const sqlFiles = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
  e.isDirectory() ? sqlFiles(join(dir, e.name)) : e.name.endsWith('.sql') ? [join(dir, e.name)] : []);

describe('database events', () => {
  it('lists every event sql/ sends on canvas:<id> (realtime.send and direct inserts into realtime.messages)', () => {
    const sent = new Set<string>();
    for (const file of sqlFiles(join(root, 'sql'))) {
      const text = readFileSync(file, 'utf8');
      // realtime.send(payload, 'event', 'canvas:' || id, true) and values (…, 'event', 'canvas:' || id, …)
      for (const m of text.matchAll(/'([A-Za-z_][A-Za-z0-9_]*)',\s*'canvas:'/g)) sent.add(m[1]!);
    }
    expect(sent.size).toBeGreaterThanOrEqual(5);
    for (const event of sent) expect(DATABASE_EVENTS, `sql/ sends ${event}`).toContain(event);
  });

  it('matches names as realtime-js does (case-insensitive), Unicode that lowers to them included', () => {
    for (const event of ['block_op', 'BLOCK_OP', 'Canvas_Deleted', 'BLOC\u212A_OP', 'presence', 'access_changed']) {
      expect(isDatabaseEvent(event), event).toBe(true);
    }
    for (const event of ['cursor', 'block_op2', 'block-op', 'selection', '']) expect(isDatabaseEvent(event), event).toBe(false);
  });
});

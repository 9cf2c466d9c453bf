import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const repoRoot = new URL('../..', import.meta.url).pathname;

/**
 * A copy of the checkout's migration sources (sql/ and supabase/migrations/) in a new temporary
 * directory named `potentia-<name>-…`: a root for migrate() and migrationStatus() that a test may
 * edit (a file added, renamed, changed) without touching the checkout. The caller removes it.
 */
export function checkoutCopy(name: string): string {
  const root = mkdtempSync(join(tmpdir(), `potentia-${name}-`));
  for (const dir of ['sql', 'supabase/migrations']) cpSync(join(repoRoot, dir), join(root, dir), { recursive: true });
  return root;
}

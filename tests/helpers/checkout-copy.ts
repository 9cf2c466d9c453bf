import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const repoRoot = new URL('../..', import.meta.url).pathname;

/**
 * A copy of the checkout's migration sources (sql/ and supabase/migrations/) in a new temporary
 * directory named `potentia-<name>-…`: a root for migrate() and migrationStatus() that a test may
 * edit (a file added, renamed, changed) without touching the checkout. With `migrationsBefore` (a
 * migration's file name), only the migrations that sort before it: the previous release's, for an
 * upgrade test. The caller removes it.
 */
export function checkoutCopy(name: string, { migrationsBefore }: { migrationsBefore?: string } = {}): string {
  const root = mkdtempSync(join(tmpdir(), `potentia-${name}-`));
  cpSync(join(repoRoot, 'sql'), join(root, 'sql'), { recursive: true });
  const kept = (src: string) => migrationsBefore === undefined || !src.endsWith('.sql') || basename(src) < migrationsBefore;
  cpSync(join(repoRoot, 'supabase/migrations'), join(root, 'supabase/migrations'), { recursive: true, filter: kept });
  return root;
}

// A committed migration never changes. A database records each migration's sha256 when it applies
// it (src/db/migrate.ts), and `npm run db:migrate` then refuses to run on any database whose
// migration differs from the file (MigrationChangedError): an edit to a committed migration breaks
// every database migrated before the edit. A change goes in a new migration
// (`npm run db:migration -- <name>`, or a new hand-written file), never in an old one.
// The rule is checked against git: each file in supabase/migrations must be byte for byte the blob
// of the commit that added it. Files not committed yet are new and free to change.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = 'supabase/migrations';

/**
 * Edits made before the rule was checked, each to a migration before it reached a database
 * outside development: the blob accepted now. Every later edit fails this test.
 */
const acceptedEdits: Record<string, { blob: string; why: string }> = {
  '20261201000503_write_path_2.sql': {
    blob: 'ce9425e0ca361793dd8f5c669af1ce70932ce87b',
    why: 'cc883ce (2026-11-30): the header and a comment redone in the session that wrote it, before it landed',
  },
  '20261201070000_block_tombstones.sql': {
    blob: '9b3b094be21ef5e40fe743f34a312ef303c3202e',
    why: "83439f7 (2026-12-01): service_role's grant added nine minutes after the table, in the same session",
  },
  '20261202015448_rate_limit_overflow_row_and_open_windows.sql': {
    blob: 'd5fe6b7fdb9872ff2c94547c84e16627922b51ef',
    why: 'h79 (2026-12-04): its top-level LOCK TABLE stopped `supabase db push` (no transaction block); the same lock in a do block. Databases that applied the earlier text are accepted (src/db/superseded-migrations.ts)',
  },
  '20261202025806_rate_limit_overflow_comment.sql': {
    blob: '4fa3f7059b5f664421394d59906f105fac9bfc84',
    why: 'h79 (2026-12-04): as 20261202015448, the same statement',
  },
  '20261203191000_row_rules_as_functions.sql': {
    blob: '9d799b2bdcbb988ec9b91fd319feeb0bbbcf50e9',
    why: 'e6c2f70 (2026-12-03): the header states what VALIDATE costs; edited in the session that wrote it, before it landed',
  },
};

function git(args: string[]): string {
  return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function inGitCheckout(): boolean {
  try {
    return git(['rev-parse', '--is-inside-work-tree']).trim() === 'true';
  } catch {
    return false;  // a tarball or a copy without .git: nothing to compare with
  }
}

/** Each migration file → the blob and commit that added it (`git log --diff-filter=A --raw`). */
function addedBlobs(): Map<string, { blob: string; commit: string }> {
  const added = new Map<string, { blob: string; commit: string }>();
  let commit = '';
  for (const line of git(['log', '--diff-filter=A', '--raw', '--no-abbrev', '--no-renames', '--format=commit %H', '--', `${dir}/`]).split('\n')) {
    if (line.startsWith('commit ')) commit = line.slice(7);
    // :000000 100644 <old> <new> A\t<path>; the newest add wins a name added twice (deleted between)
    const raw = /^:\d+ \d+ [0-9a-f]+ ([0-9a-f]+) A\t(.+)$/.exec(line);
    if (raw && !added.has(raw[2]!)) added.set(raw[2]!, { blob: raw[1]!, commit });
  }
  return added;
}

describe.skipIf(!inGitCheckout())('committed migrations never change', () => {
  it('every file in supabase/migrations is the blob the commit that added it wrote', () => {
    const files = readdirSync(join(root, dir)).filter((f) => f.endsWith('.sql')).sort();
    const added = addedBlobs();
    const paths = files.map((f) => `${dir}/${f}`);
    const now = git(['hash-object', '--', ...paths]).trim().split('\n');
    const changed: string[] = [];
    files.forEach((file, i) => {
      const first = added.get(paths[i]!);
      if (!first || first.blob === now[i]) return;  // not committed yet, or unchanged
      const accepted = acceptedEdits[file];
      if (accepted?.blob === now[i]) return;
      const restore = accepted ? `git cat-file blob ${accepted.blob} > ${paths[i]}` : `git checkout ${first.commit.slice(0, 7)} -- ${paths[i]}`;
      changed.push(`${paths[i]} differs from what ${first.commit.slice(0, 7)} added (now blob ${now[i]!.slice(0, 7)}): ` +
                   `put the change in a new migration and restore this file (${restore})`);
    });
    expect(changed, 'databases that applied these refuse to migrate (MigrationChangedError)').toEqual([]);
    expect(files.length).toBeGreaterThan(50);
  });

  it('names only edits that exist (an accepted edit whose file is gone or unchanged is removed here)', () => {
    const added = addedBlobs();
    for (const [file, { blob }] of Object.entries(acceptedEdits)) {
      const first = added.get(`${dir}/${file}`);
      expect(first, `${file} is in supabase/migrations' history`).toBeDefined();
      expect(first!.blob, `${file} was edited after its commit`).not.toBe(blob);
    }
  });
});

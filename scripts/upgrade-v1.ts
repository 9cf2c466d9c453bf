// npm run upgrade:v1 -- --from <postgres URL | SQLite file> [--to URL] [--dry-run | --verify-only] [--no-verify]
//                        [--batch N] [--workspace-per owner|one] [--workspace-name NAME] [--schema NAME]
// Moves a v1 database into v2 (src/upgrade/upgrade.ts, docs/upgrade-v1.md). Exits 1 when the
// verification finds a difference, 2 on bad arguments or a failure.
import { parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { loadConfigOrExit } from '../src/config.ts';
import { connectionUrls } from '../src/db/pooling.ts';
import { runUpgrade, type UpgradeError } from '../src/upgrade/upgrade.ts';

const usage = `usage: npm run upgrade:v1 -- --from <postgres URL | path to a SQLite file> [options]
  --to URL                  the v2 database, migrated (default: DIRECT_DATABASE_URL, else DATABASE_URL)
  --dry-run                 report what would move and what cannot; write nothing
  --verify-only             compare the v2 database with v1; write nothing
  --no-verify               skip the verification after writing
  --batch N                 rows per insert statement and blocks between progress lines (default 1000)
  --workspace-per owner|one a workspace per canvas owner (default), or one workspace for everybody
  --workspace-name NAME     the name of that one workspace (default "Workspace from v1")
  --schema NAME             schema of the v1 tables in a Postgres source (default public)
see docs/upgrade-v1.md`;

const { values, number } = parseCommandLine({
  options: {
    from: { type: 'string' }, to: { type: 'string' }, 'dry-run': { type: 'boolean' }, 'verify-only': { type: 'boolean' },
    'no-verify': { type: 'boolean' }, batch: { type: 'string' }, 'workspace-per': { type: 'string' },
    'workspace-name': { type: 'string' }, schema: { type: 'string' },
  },
}, usage);
const batch = number('batch', wholeNumber(1), 1000);
const per = values['workspace-per'] ?? 'owner';
if (!values.from || (per !== 'owner' && per !== 'one') || (values['dry-run'] && values['verify-only'])) {
  console.error(usage);
  process.exit(2);
}

try {
  const result = await runUpgrade({
    from: values.from, to: values.to ?? connectionUrls(loadConfigOrExit()).direct, dryRun: values['dry-run'], verifyOnly: values['verify-only'],
    verify: !values['no-verify'], batch, workspacePer: per, workspaceName: values['workspace-name'], schema: values.schema,
  });
  process.exitCode = result.ok ? 0 : 1;
} catch (err) {
  const e = err as UpgradeError;
  // docs/upgrade-v1.md step 5: each canvas is one transaction, so a rerun resumes; a failure before
  // the first write (a dry run, --verify-only, a database that cannot be opened) left v2 as it was
  console.error(`upgrade:v1 failed: ${e.message}\n  ` + (e.nothingWritten
    ? 'Nothing was written: fix the cause, then run the same command again.'
    : 'Canvases already upgraded are kept and the one in flight was rolled back: ' +
      'fix the cause (a lost connection needs nothing), then run the same command again; it skips what is done.'));
  process.exitCode = 2;
}

// npm run db:migration -- <name>     write supabase/migrations/<timestamp>_<name>.sql from what
//                                    changed in sql/ since the last generated migration
// npm run db:migration -- --check    exit 1 (naming the files) when sql/ has changes no migration holds
// sql/ is the readable source of functions, triggers, policies and grants; the migrations are what
// databases run (`npm run db:migrate`, `supabase db push`). src/db/generate-migration.ts says how.
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import { generateMigration } from '../src/db/generate-migration.ts';
import { graphileWorkerRevision } from '../src/db/graphile-schema.ts';
import { describeDrift, hasDrift, sourcesDrift } from '../src/db/sources.ts';

const USAGE = 'usage: npm run db:migration -- <name>   (e.g. npm run db:migration -- add_block_tags): put what changed in sql/ into a new migration\n'
  + '       npm run db:migration -- --check     exit 1, naming the files, when sql/ has changes no migration holds';
const { values, positionals } = parseCommandLine({ options: { check: { type: 'boolean' } }, allowPositionals: true }, USAGE);
const root = fileURLToPath(new URL('..', import.meta.url));

if (values.check) {
  const drift = await sourcesDrift(root, graphileWorkerRevision);
  if (hasDrift(drift)) {
    console.error('sql/ has changes no migration holds:');
    for (const line of describeDrift(drift)) console.error(`  ${line}`);
    console.error('run `npm run db:migration -- <name>` and commit the new migration with sql/.');
    process.exit(1);
  }
  console.log(`supabase/migrations hold sql/ (latest generated: ${drift.manifest})`);
  process.exit(0);
}

const name = positionals[0];
if (!name || positionals.length > 1) {
  console.error(USAGE);
  process.exit(2);
}
try {
  const generated = await generateMigration(root, name);
  if (!generated) {
    console.log('nothing to generate: supabase/migrations already hold sql/ and graphile-worker\'s schema');
  } else {
    console.log(`wrote ${generated.file}`);
    for (const line of describeDrift(generated.drift)) console.log(`  ${line}`);
    const carried = [
      ...(generated.drift.graphileWorker ? [`graphile-worker schema revisions ${generated.drift.graphileWorker.have + 1}-${generated.drift.graphileWorker.need}`] : []),
      ...generated.included,
    ];
    console.log(`  carries: ${carried.length ? carried.join(', ') : 'no source (the updated list of sources only)'}`);
    console.log('apply it with `npm run db:migrate`; commit it together with the sql/ change.');
  }
} catch (err) {
  console.error(`db:migration failed: ${(err as Error).message}`);
  process.exitCode = 1;
}

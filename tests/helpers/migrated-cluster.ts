import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import { PrivateCluster, serverBindir, type PrivateClusterOptions } from '../../scripts/lib/private-cluster.ts';
import { freePort } from './free-port.ts';

/**
 * A private PostgreSQL cluster (scripts/lib/private-cluster.ts) on a free port, started, with a
 * database `potentia` created and migrated: for tests that stop, crash or restart the server
 * itself, which they must never do to the machine's shared one. The caller ends it with
 * `cluster.destroy()`.
 */
export async function startMigratedCluster(options: PrivateClusterOptions = {}): Promise<PrivateCluster> {
  const cluster = PrivateCluster.create(serverBindir(), await freePort(), options);
  await cluster.start();
  const bootstrap = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} });
  try {
    await bootstrap`create database potentia`;
  } finally {
    await bootstrap.end();
  }
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts', '--database-url', cluster.url('potentia'), '--quiet', '--strict'],
    { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'ignore', 'inherit'] });
  return cluster;
}

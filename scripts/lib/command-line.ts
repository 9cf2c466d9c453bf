// The command line of a script under scripts/: node:util's parseArgs, with the two answers every
// script owes its user. --help (-h) prints the usage and exits 0; an unknown or malformed option
// prints what was wrong and the usage, and exits 2, where parseArgs alone threw a stack trace.
import { basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * parseArgs(config) for a script run from a shell. `usage` is what --help prints (default: the
 * script's name and its options, from config). A script's own `help` option is not needed.
 */
export function parseCommandLine<T extends ParseArgsConfig>(config: T, usage?: string): ReturnType<typeof parseArgs<T>> {
  const text = usage ?? `usage: npx tsx scripts/${basename(process.argv[1] ?? 'script')} ${Object.entries(config.options ?? {})
    .map(([name, o]) => `[--${name}${o.type === 'string' ? ` ${name.toUpperCase().replace(/-/g, '_')}` : ''}]`).join(' ')}`;
  const args = config.args ?? process.argv.slice(2);
  if (args.some((a) => a === '--help' || a === '-h')) {
    console.log(text);
    process.exit(0);
  }
  try {
    return parseArgs(config);
  } catch (err) {
    if (!String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) throw err;
    console.error(`${(err as Error).message}\n${text}`);
    process.exit(2);
  }
}

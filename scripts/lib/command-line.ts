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
  let parsed: ReturnType<typeof parseArgs<T>>;
  try {
    parsed = parseArgs(config);
  } catch (err) {
    if (!String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) throw err;
    console.error(`${(err as Error).message}\n${text}`);
    process.exit(2);
  }
  // `--database-url "$OWNER_URL"` with the variable unset passes '': read as a value it ended in a
  // stack trace (db:migrate: TypeError Invalid URL), and taken for "not given" it would fall back
  // on another database than the one meant. Refused, naming the option, unless '' is its default.
  const values = parsed.values as Record<string, unknown>;
  for (const [name, option] of Object.entries(config.options ?? {})) {
    const value = values[name];
    if (option.type === 'string' && option.default !== '' && typeof value === 'string' && value.trim() === '') {
      console.error(`--${name} is empty (an unset shell variable?): give it a value, or leave the option out\n${text}`);
      process.exit(2);
    }
  }
  return parsed;
}

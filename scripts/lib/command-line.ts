// The command line of a script under scripts/: node:util's parseArgs, with the two answers every
// script owes its user. --help (-h) prints the usage and exits 0; an unknown or malformed option
// prints what was wrong and the usage, and exits 2, where parseArgs alone threw a stack trace.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { z } from 'zod';
import { envDecimal, envInteger, envMilliseconds, envUrl } from '../../src/env-values.ts';
import { blankOptionProblem } from '../../src/option-values.ts';

/** What a numeric option takes: src/env-values.ts's forms, so that options parse as env numbers do (no 0x10, 1e3, Infinity). */
export type NumberForm = z.ZodType<number, string>;
export const wholeNumber = envInteger;
export const decimalNumber = envDecimal;
export const milliseconds = envMilliseconds;

type Parsed<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>> & {
  /**
   * --name's value read as `form` (wholeNumber(1), decimalNumber(0, undefined, { above: true })…); one
   * that does not parse is refused naming the option, the form and what was given, exit 2. Absent
   * (no value, no default), `fallback`.
   */
  number<F extends number | undefined = never>(name: string, form: NumberForm, fallback?: F): number | F;
  /** --name's value as numbers separated by commas, each read as `form` ('' is none). */
  numbers(name: string, form: NumberForm): number[];
};

/**
 * parseArgs(config) for a script run from a shell. `usage` is what --help prints (default: the
 * script's name and its options, from config). A script's own `help` option is not needed.
 */
export function parseCommandLine<T extends ParseArgsConfig>(config: T, usage?: string): Parsed<T> {
  const text = usage ?? `usage: npx tsx scripts/${basename(process.argv[1] ?? 'script')} ${Object.entries(config.options ?? {})
    .map(([name, o]) => `[--${name}${o.type === 'string' ? ` ${name.toUpperCase().replace(/-/g, '_')}` : ''}]`).join(' ')}`;
  const args = config.args ?? process.argv.slice(2);
  if (args.some((a) => a === '--help' || a === '-h')) {
    console.log(usage === undefined ? [text, ...headerComment(process.argv[1])].join('\n') : text);
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
  // `--database-url "$OWNER_URL"` with the variable unset passes '': refused, naming the option
  // (src/option-values.ts), unless '' is its default
  const values = parsed.values as Record<string, unknown>;
  for (const [name, option] of Object.entries(config.options ?? {})) {
    const blank = option.type === 'string' && option.default !== '' ? blankOptionProblem(name, values[name]) : undefined;
    if (blank) {
      console.error(`${blank}\n${text}`);
      process.exit(2);
    }
    // a database name where the URL goes (`--database-url potentia`) ended in TypeError: Invalid
    // URL and a stack trace: refused as DATABASE_URL is (src/config.ts)
    const given = values[name];
    const notUrl = /(^|-)database-url$/.test(name) && typeof given === 'string' ? envUrl('postgres').safeParse(given).error : undefined;
    if (notUrl) {
      console.error(`--${name}: ${notUrl.issues[0]!.message} (got ${JSON.stringify(given)})\n${text}`);
      process.exit(2);
    }
  }
  const refuse = (message: string): never => {
    console.error(`${message}\n${text}`);
    process.exit(2);
  };
  const read = (name: string, form: NumberForm, given: string, list: boolean): number => {
    const result = form.safeParse(given);
    if (result.success) return result.data;
    const expected = result.error.issues[0]!.message;
    return refuse(`--${name}: ${list ? `${expected}, each of a comma-separated list` : expected} (got ${JSON.stringify(values[name])})`);
  };
  function number<F extends number | undefined = never>(name: string, form: NumberForm, ...fallback: [F?]): number | F {
    const given = values[name];
    if (typeof given === 'string') return read(name, form, given, false);
    if (fallback.length === 0) throw new Error(`--${name}: no value and no fallback`);
    return fallback[0] as F;
  }
  const numbers = (name: string, form: NumberForm): number[] => {
    const given = values[name];
    if (typeof given !== 'string' || given.trim() === '') return [];
    return given.split(',').map((one) => read(name, form, one, true));
  };
  return { ...parsed, number, numbers };
}

/**
 * The leading `//` lines of a script, unprefixed: where a script without a usage of its own says what
 * it does, its options' defaults and which database it drops (docs/benchmarks.md points readers
 * there), so that --help tells it and not only the option names. [] when the file cannot be read.
 */
function headerComment(file: string | undefined): string[] {
  let source: string;
  try { source = readFileSync(file ?? '', 'utf8'); } catch { return []; }
  const lines: string[] = [];
  for (const line of source.split('\n')) {
    if (!line.startsWith('//')) break;
    lines.push(line.replace(/^\/\/ ?/, ''));
  }
  return lines.length ? ['', ...lines] : [];
}

import { z } from 'zod';
import { withoutPassword } from './url-redaction.ts';

/**
 * Reading environment variables the way operators set them. An env file line `NAME=` (systemd's
 * EnvironmentFile, docker's --env-file, `docker run -e NAME=`) or a template that left a value
 * blank gives the process NAME set to '' (or spaces), which means "not set", not "set to
 * nothing": read as a value it failed as one (`Invalid URL` for DIRECT_DATABASE_URL=), or, worse,
 * passed as one (`PORT=` coerced to 0: a random port; `WORKER_SHUTDOWN_TIMEOUT_MS=` to 0). So
 * blank values are dropped before anything reads them, and a value that does not parse is
 * reported with its variable, the form it takes and what was given.
 */

/**
 * `env` without its blank values ('' or white space only): they count as unset, so a default
 * applies and a required variable is reported missing. `emptyIsValue` names the variables for
 * which '' is a documented value of its own (WORKER_CRONTAB='': no crontab); they keep theirs.
 */
export function presentValues(env: Record<string, string | undefined>, emptyIsValue: readonly string[] = []): Record<string, string> {
  const present: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (value.trim() === '' && !emptyIsValue.includes(name)) continue;
    present[name] = value;
  }
  return present;
}

/**
 * The longest delay a Node timer takes, 2^31 - 1 ms (~24.8 days). A longer one is not refused by
 * Node: it fires after 1 ms (TimeoutOverflowWarning), so WORKER_HEARTBEAT_MS=3000000000 wrote a
 * heartbeat every millisecond and WORKER_SHUTDOWN_TIMEOUT_MS=9999999999 gave running jobs no time.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** Postgres's `integer`, what the SQL functions take seconds as: REFRESH_TOKEN_TTL_SECONDS past it failed every sign-in (`out of range for type integer`). */
export const MAX_SQL_INTEGER = 2_147_483_647;

/**
 * A whole number from `min` (to `max`), in decimal digits (a sign allowed; spaces around are
 * trimmed); every way it can fail says the range. Number() alone also read 0x10 (16), 0b101, 0o7
 * and 1e3: `PORT=0x1F90` listened on 8080, and 1e10 reads as a plain number to no one.
 */
export function envInteger(min: number, max?: number) {
  return decimalNumber({ whole: true, min, max });
}

/**
 * A number from `min` (to `max`) that may have a fraction (4.5), written as envInteger's are: decimal
 * digits, with a point; no 0x10, 1e3 or Infinity. `above`: more than `min`, not `min` itself.
 */
export function envDecimal(min: number, max?: number, { above = false }: { above?: boolean } = {}) {
  return decimalNumber({ whole: false, min, max, above });
}

/** The one reader of numbers written in decimal (env variables, and the scripts' options: scripts/lib/command-line.ts). */
function decimalNumber({ whole, min, max, above = false }: { whole: boolean; min: number; max?: number; above?: boolean }) {
  const low = above ? `above ${min}` : `of at least ${min}`;
  const range = max === undefined ? low : above ? `above ${min}, at most ${max}` : `from ${min} to ${max}`;
  const error = `expected ${whole ? 'a whole number' : 'a number'} ${range}`;
  let parsed = z.number({ error });
  if (whole) parsed = parsed.int({ error });
  parsed = above ? parsed.gt(min, { error }) : parsed.min(min, { error });
  if (max !== undefined) parsed = parsed.max(max, { error });
  const digits = whole ? /^[+-]?[0-9]+$/ : /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/;
  return z.string({ error }).trim().regex(digits, { error }).transform(Number).pipe(parsed);
}

/** Milliseconds a timer waits (setTimeout, setInterval): from `min` to MAX_TIMER_MS. */
export function envMilliseconds(min: number) {
  return envInteger(min, MAX_TIMER_MS);
}

const URL_FORMS = {
  postgres: { protocol: /^postgres(ql)?$/, example: 'postgres://user:password@host:5432/database' },
  http: { protocol: /^https?$/, example: 'https://host/path' },
} as const;

/** A URL of one kind (postgres:// or http(s)://); the error shows `example`, else the kind's own. */
export function envUrl(kind: keyof typeof URL_FORMS, example: string = URL_FORMS[kind].example) {
  return z.string().url({ protocol: URL_FORMS[kind].protocol, error: `expected ${kind === 'http' ? 'an http(s)' : `a ${kind}`}:// URL, e.g. ${example}` });
}

/**
 * Text as given, without white space around it (`what` says what it is, in the error). Kept, such a
 * value passed as a different one: HOST='127.0.0.1 ' (docker's --env-file keeps trailing spaces)
 * failed to listen with `getaddrinfo ENOTFOUND` and advice about the database; JWT_AUDIENCE with a
 * trailing space refused the tokens Supabase issues (aud `authenticated`) as of another audience.
 */
export function envTrimmed(what: string) {
  return z.string().regex(/^\S(?:[\s\S]*\S)?$/, { error: `expected ${what}, without spaces around it` });
}

/** One of `options`, exactly as written. */
export function envChoice<const T extends readonly [string, ...string[]]>(options: T) {
  return z.enum(options, { error: `expected one of ${options.join(', ')}` });
}

/** An on/off switch: 1 or true, 0 or false. */
export function envFlag() {
  return z.enum(['0', '1', 'true', 'false'], { error: 'expected 1 or true (on), 0 or false (off)' });
}

/** Text of `min` characters at least (`what` says what it is, in the error). */
export function envText(min: number, what?: string) {
  return z.string().min(min, { error: `expected ${what ? `${what}, ` : ''}${min} character${min === 1 ? '' : 's'} at least` });
}

/**
 * Characters that give a secret no strength one can see or type: white space, controls, format
 * characters (zero-width space U+200B, joiners, BOM) and the other default-ignorable code points
 * (Hangul fillers, variation selectors). A paste or an editor adds them unseen, and a secret made
 * of them passed a length check by characters.
 */
const INVISIBLE = /[\s\p{C}\p{Z}\p{Default_Ignorable_Code_Point}]/u;

/**
 * A signing secret: `minBytes` bytes at least, counted in UTF-8 as HS256 keys are (TextEncoder),
 * with no invisible character in it (INVISIBLE) but a plain space between others (a passphrase):
 * 40 zero-width spaces were 40 "characters" and passed JWT_SECRET's 32. White space at either end
 * is refused too (an env file or a paste adds it; docker's --env-file keeps it), saying what
 * removing it changes (`onChange`; default: tokens minted with it in the key stop verifying). The
 * errors say what to do (`generate`).
 */
export function envSecret(minBytes: number, what: string, generate: string,
  onChange = 'tokens and API keys minted while it was part of the key stop verifying: mint them again, npx tsx scripts/api-keys.ts') {
  return z.string().superRefine((value, ctx) => {
    const atEnd = /^\s|\s$/u.exec(value);
    const invisible = atEnd ?? INVISIBLE.exec(value.replaceAll(' ', 'x')); // a plain space inside is typed
    if (invisible) {
      const codePoint = `U+${invisible[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
      const at = `(it has ${codePoint} at character ${[...value.slice(0, invisible.index)].length + 1})`;
      ctx.addIssue({ code: 'custom', message: atEnd
        ? `expected ${what} without white space at its start or end ${at}: remove it (${onChange}), or make one with ${generate}`
        : `expected ${what} without invisible characters ${at}: copy it again, or make one with ${generate}` });
    } else if (Buffer.byteLength(value, 'utf8') < minBytes) {
      ctx.addIssue({ code: 'custom', message: `expected ${what}, ${minBytes} characters at least (bytes in UTF-8): make one with ${generate}` });
    }
  });
}

/**
 * The issues of a failed parse of `env` as one line: `NAME: expected … (got …)` each, once per
 * variable and message. What was given is shown so that a stray quote or a typo is seen, except
 * for `secrets` (their length only) and URLs (without their password).
 */
export function envProblems(issues: readonly z.core.$ZodIssue[], env: Record<string, string | undefined>, secrets: readonly string[] = []): string {
  const lines = new Set<string>();
  for (const issue of issues) {
    const name = issue.path.join('.');
    const value = env[name];
    let given = '';
    if (value !== undefined) {
      if (secrets.includes(name)) given = ` (got ${value.length} character${value.length === 1 ? '' : 's'})`;
      else if (issue.code === 'invalid_format' && issue.format === 'url' && value.includes('@')) {
        // user:password@host: the password is what withoutPassword finds after the scheme
        given = value.includes('://') ? ` (got ${JSON.stringify(withoutPassword(value))})` : ` (got ${value.length} characters, no scheme://)`;
      } else given = ` (got ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)})`;
    }
    lines.add(`${name}: ${issue.message}${given}`);
  }
  return [...lines].join('; ');
}

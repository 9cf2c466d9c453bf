/**
 * A command-line option given blank: `--database-url "$OWNER_URL"` or `--role="$ROLE"` with the
 * variable unset passes ''. Read as a value it failed as one (db:migrate: TypeError Invalid URL;
 * serve: `unknown role : expected …`), and taken for "not given" it would fall back on another
 * database or role than the one meant. One refusal for every option of every command line: the
 * scripts' (scripts/lib/command-line.ts) and npm run serve's --role (src/roles.ts).
 */
export function blankOptionProblem(name: string, value: unknown): string | undefined {
  if (typeof value !== 'string' || value.trim() !== '') return undefined;
  return `--${name} is empty (an unset shell variable?): give it a value, or leave the option out`;
}

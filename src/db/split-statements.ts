/**
 * Splits SQL text into its top-level statements, as the Supabase CLI does before it sends a
 * migration (`supabase db push`: one statement per message of a single pipeline). Semicolons
 * inside quotes ('…', E'…', "…"), dollar quotes ($$…$$, $tag$…$tag$) and comments (--, nested
 * /* *\/) do not split. Each statement comes back without its leading comments and whitespace;
 * empty ones are dropped.
 */
export function splitStatements(text: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;
  const push = (end: number) => {
    const statement = stripLeadingComments(text.slice(start, end));
    if (statement) statements.push(statement);
  };
  while (i < text.length) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === '-' && next === '-') {
      const eol = text.indexOf('\n', i);
      i = eol < 0 ? text.length : eol + 1;
    } else if (c === '/' && next === '*') {
      i = endOfBlockComment(text, i);
    } else if (c === "'") {
      const escapes = /[eE]$/.test(text.slice(Math.max(0, i - 1), i)) && !/[A-Za-z0-9_$]/.test(text[i - 2] ?? '');
      i = endOfQuoted(text, i, "'", escapes);
    } else if (c === '"') {
      i = endOfQuoted(text, i, '"', false);
    } else if (c === '$' && !/[A-Za-z0-9_$]/.test(text[i - 1] ?? '')) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (tag) {
        const close = text.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? text.length : close + tag[0].length;
      } else i++;
    } else if (c === ';') {
      push(i);
      start = ++i;
    } else i++;
  }
  push(text.length);
  return statements;
}

function endOfBlockComment(text: string, from: number): number {
  let depth = 0;
  let i = from;
  while (i < text.length) {
    if (text.startsWith('/*', i)) { depth++; i += 2; } else if (text.startsWith('*/', i)) {
      depth--; i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  return text.length;
}

/** The index after the quote closing the one at `from` (a doubled quote is part of the text). */
function endOfQuoted(text: string, from: number, quote: string, backslashEscapes: boolean): number {
  let i = from + 1;
  while (i < text.length) {
    if (backslashEscapes && text[i] === '\\') i += 2;
    else if (text[i] === quote) {
      if (text[i + 1] === quote) i += 2;
      else return i + 1;
    } else i++;
  }
  return text.length;
}

function stripLeadingComments(statement: string): string {
  let s = statement.trim();
  for (;;) {
    if (s.startsWith('--')) {
      const eol = s.indexOf('\n');
      s = eol < 0 ? '' : s.slice(eol + 1).trim();
    } else if (s.startsWith('/*')) s = s.slice(endOfBlockComment(s, 0)).trim();
    else return s;
  }
}

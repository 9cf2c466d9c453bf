// A database URL for messages and logs, without its password.

/**
 * The URL with its password replaced by `***`: everything between the user's colon and the last
 * `@` (the host's). Cut as text, not through URL: a password with an unescaped `/`, `#` or `?`
 * (postgres://u:12/34@h/db) is a port and a path or fragment to URL, whose toString then printed
 * the password as it was; and a multi-host URL (h1,h2) is no URL to it at all.
 */
export function withoutPassword(url: string): string {
  const scheme = url.indexOf('://');
  if (scheme < 0) return '(not a URL)';
  const at = url.lastIndexOf('@');
  const colon = url.indexOf(':', scheme + 3);
  return at > scheme && colon >= 0 && colon < at ? `${url.slice(0, colon + 1)}***${url.slice(at)}` : url;
}

/** `postgres <host><path>` of a Postgres URL, as upgrade:v1 names its databases (no user, no password). */
export function postgresLabel(url: string): string {
  const u = new URL(withoutPassword(url));
  return `postgres ${u.host}${u.pathname}`;
}

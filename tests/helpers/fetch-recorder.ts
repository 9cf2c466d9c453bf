/**
 * Records every request this process's global fetch sends, as `METHOD URL` (@potentia/client and
 * supabase-js call the global fetch at each request), so a test can assert what was sent, or that
 * nothing was. restore() puts the real fetch back.
 */
export function recordFetches(): { readonly sent: string[]; restore(): void } {
  const realFetch = globalThis.fetch;
  const sent: string[] = [];
  globalThis.fetch = (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    sent.push(`${init?.method ?? 'GET'} ${url}`);
    return realFetch(input, init);
  };
  return { sent, restore: () => { globalThis.fetch = realFetch; } };
}

import { isIPv4, isIPv6 } from 'node:net';

/**
 * The key a per-client-address limit counts a caller under (the realtime gateway's socket cap and
 * its authorizations without a user, src/realtime/admission.ts; the sign-up and sign-in limits
 * count the same way in SQL, internal.client_address_key in sql/auth/password.sql):
 *  - an IPv4 address as itself, also when it arrives IPv4-mapped (`::ffff:203.0.113.7`, as Node
 *    reports IPv4 peers of a dual-stack listener);
 *  - an IPv6 address by its /64: one host or one customer line is handed a /64 (at least), and
 *    picks any address in it for each connection, so counted per address it would be 2^64
 *    clients, each with the whole limit;
 *  - anything else (not an address: an unusual X-Forwarded-For) as its text, still counted.
 */
export function clientAddressKey(address: string): string {
  const text = address.trim();
  const bare = text.replace(/%.*$/, ''); // an IPv6 zone (fe80::1%eth0)
  if (isIPv4(bare)) return bare;
  if (!isIPv6(bare)) return text;
  const groups = ipv6Groups(bare);
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.');
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail read as two groups). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, null];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const left = parse(head);
  if (tail === null) return left;
  const right = parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

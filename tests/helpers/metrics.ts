/** potentia_rate_limit_rejections_total{endpoint} as the server at `baseUrl` (http://…) shows it in /metrics (0 before the first). */
export async function rateLimitRejections(baseUrl: string, endpoint: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`potentia_rate_limit_rejections_total{endpoint="${endpoint}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

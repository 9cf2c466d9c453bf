/** potentia_rate_limit_rejections_total{endpoint} as the server at `baseUrl` (http://…) shows it in /metrics (0 before the first). */
export async function rateLimitRejections(baseUrl: string, endpoint: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`potentia_rate_limit_rejections_total{endpoint="${endpoint}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** The value of the unlabelled metric `name` in the /metrics of the server at `baseUrl` (undefined before it exists). */
export async function metricValue(baseUrl: string, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/**
 * Operator access: when an operator token is configured, the pages and data meant for operators
 * (`/metrics`, `/ring`, `/ring/view`) require it, as `?token=…`, the header `x-operator-token`
 * or `authorization: Bearer …`.
 */

/** Whether `req` carries `token` (query, `x-operator-token` or bearer authorization). */
export function hasOperatorToken(req: Request, token: string): boolean {
  const url = new URL(req.url);
  const bearer = req.headers.get("authorization")?.match(/^Bearer (.+)$/)?.[1];
  const given = url.searchParams.get("token") ?? req.headers.get("x-operator-token") ?? bearer;
  return given !== null && given !== undefined && constantTimeEqual(given, token);
}

/** String equality whose time does not depend on where the strings differ. */
function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

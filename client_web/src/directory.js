// Where a client connects: a WebSocket URL as given, or the one a coordinator's HTTP address
// names. `GET /api/join` answers the least-loaded live gateway, or the coordinator's own /ws
// when it has none. The client asks before every connection attempt, so that after its gateway
// dies it reconnects, with its backoff, to a live one.

/**
 * @param {string} address  ws(s)://… (used as it is) or http(s)://host:port (asked)
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<string>} the WebSocket URL to connect to
 */
export async function endpoint(address, fetchImpl = globalThis.fetch) {
  if (!/^https?:\/\//.test(address)) return address;
  const url = `${address.replace(/\/+$/, "")}/api/join`;
  const response = await fetchImpl(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const answer = await response.json();
  if (typeof answer?.url !== "string" || !/^wss?:\/\//.test(answer.url)) {
    throw new Error(`${url} named no WebSocket URL`);
  }
  return answer.url;
}

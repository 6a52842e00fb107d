// Which node this tab is. Identities (client id + the secret that proves it) are kept in IndexedDB
// so that a reload resumes the same node; a Web Lock per identity keeps two tabs of one browser
// from presenting the same one, which would have them replace each other's connection (4001)
// forever. A tab that finds every saved identity in use starts as a new node.
import { load, save } from "./store.js";

const KEY = "identities";
const KEEP = 8; // identities remembered per browser profile

/** A saved identity no other tab of this browser uses now, claimed for this tab's life; null if none. */
export async function claimIdentity() {
  const saved = (await load(KEY).catch(() => null)) ?? [];
  for (const identity of saved) if (await claim(identity.clientId)) return identity;
  return null;
}

/** Remember the identity a welcome gave this tab, in place of the one it replaces (if not resumed). */
export async function keepIdentity(identity, replaced) {
  await claim(identity.clientId);
  const saved = (await load(KEY).catch(() => null)) ?? [];
  const others = saved.filter((i) => i.clientId !== identity.clientId && i.clientId !== replaced?.clientId);
  await save(KEY, [...others, identity].slice(-KEEP));
}

function claim(name) {
  if (!navigator.locks) return Promise.resolve(true); // no Web Locks (not a secure context): assume one tab
  return new Promise((resolve) => {
    navigator.locks.request(`pollen-identity-${name}`, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock === null ? undefined : new Promise(() => {}); // held until the tab goes
    });
  });
}

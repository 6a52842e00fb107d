// The page: starts the worker, shows what it reports, keeps state in IndexedDB.
import { lineChart } from "./charts.js";
import { claimIdentity, keepIdentity } from "./identity.js";
import { readOwnData } from "./own-data.js";
import { load, save } from "./store.js";

const $ = (id) => document.getElementById(id);
// The coordinator that served this page names where to connect (/api/join): a gateway, or its own /ws.
const coordinatorUrl = location.origin;
const token = takeToken();
// `?threads=N` caps the CPU trainer's threads (1: one thread); unset, it takes the machine's cores.
const threads = Number.parseInt(new URL(location.href).searchParams.get("threads") ?? "", 10) || null;
const lossChart = lineChart($("loss-chart"), ["step", "loss"]);
const accuracyChart = lineChart($("accuracy-chart"), ["round", "accuracy", "loss"], { height: 260 });
const lossHistory = [[], []];
let worker = null;
// A thread of the trainer's CPU pool that dies cannot tell the worker, which waits for it for
// good; it tells this page instead, on a channel of the worker's own (see pool-thread.js), closed
// with the worker so that a late word from a replaced worker's threads replaces nothing.
let panics = null;
let userData = null;
let identity = null; // {clientId, secret}: the node this tab is, once known
window.pollen = { events: [], backend: null, rounds: [] }; // read by tests and the curious

/** The join token from `?token=`, moved to sessionStorage and out of the address bar, history and Referer. */
function takeToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given !== null) {
    sessionStorage.setItem("pollen-join-token", given);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem("pollen-join-token");
}

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text ?? state;
}

function onEvent(e) {
  window.pollen.events.push(e.type);
  switch (e.type) {
    case "backend":
      window.pollen.backend = e.backend;
      window.pollen.backendReason = e.reason;
      window.pollen.threads = e.threads ?? null;
      window.pollen.relaxedSimd = e.relaxedSimd ?? null;
      $("backend").textContent =
        e.backend === "webgpu" ? "WebGPU" : `CPU (WebAssembly ${e.relaxedSimd ? "relaxed " : ""}SIMD) — ${e.reason}`;
      break;
    case "connected":
      setConnection("connected");
      break;
    case "welcome":
      $("client").textContent = `node ${e.welcome.node_id}`;
      if (e.identity.clientId !== identity?.clientId) keepIdentity(e.identity, identity);
      identity = e.identity; // the secret resumes this node after a reload; the id alone cannot
      break;
    case "reconnecting":
      setConnection("reconnecting", `reconnecting in ${(e.inMs / 1000).toFixed(1)} s (${e.reason})`);
      break;
    case "data":
      $("data").textContent = `${e.examples} examples (${e.source})`;
      break;
    case "task":
      $("round").textContent = e.round;
      $("phase").textContent = e.kind === "train" ? `training for round ${e.round}` : `evaluating round ${e.round}`;
      break;
    case "batch": {
      // Where a resumed job went on from: its checkpoint's position, not the job's start.
      if (window.pollen.resumed !== undefined) window.pollen.resumedAt ??= { epoch: e.epoch, batch: e.batch };
      $("epoch").textContent = e.epoch + 1;
      $("batch").textContent = `${e.batch + 1}/${e.batches}`;
      $("loss").textContent = e.loss.toFixed(4);
      $("progress").value = (e.batch + 1) / e.batches;
      if (e.batch % 5 === 0) {
        lossHistory[0].push(lossHistory[0].length);
        lossHistory[1].push(e.loss);
        lossChart.set(lossHistory);
      }
      break;
    }
    case "checkpoint":
      window.pollen.checkpoints = (window.pollen.checkpoints ?? 0) + 1;
      break;
    case "job-resumed":
      window.pollen.resumed = e.round;
      $("phase").textContent =
        `resuming round ${e.round} ${e.checkpoint ? "from its last checkpoint" : "from its start"}`;
      break;
    case "job-discarded":
      $("phase").textContent = `round ${e.round}'s unfinished job was discarded: the round has moved on`;
      break;
    case "trained":
      $("phase").textContent =
        `round ${e.round} sent (${e.seconds.toFixed(1)} s, loss ${e.loss.toFixed(4)}` +
        `${e.precision === "fp16" ? ", mixed precision" : ""})`;
      window.pollen.rounds.push(e.round);
      save("lossHistory", lossHistory);
      break;
    case "trainer-stopped":
      // The worker's trainer is dead; a fresh worker on the CPU takes the job over from its checkpoint.
      window.pollen.trainerStopped = e.reason;
      $("phase").textContent = `the GPU failed (${e.reason}); going on on the CPU`;
      start(`the GPU failed mid-job: ${e.reason}`);
      break;
    case "cpu-thread-died":
      // The worker waits for the dead thread for good: a fresh one, on one thread, takes the job over.
      window.pollen.trainerStopped = e.reason;
      $("phase").textContent = `a CPU thread of the trainer died (${e.reason}); going on on one thread`;
      start(`a CPU thread died mid-job: ${e.reason}`, 1);
      break;
    case "task-failed":
    case "fatal":
      $("phase").textContent = `error: ${e.message}`;
      break;
    case "coordinator-error":
      $("phase").textContent = `coordinator: ${e.error.code}: ${e.error.message}`;
      break;
    case "stopped":
      setConnection(e.code === 0 ? "finished" : "left", e.code === 0 ? "finished" : `stopped (code ${e.code})`);
      $("leave").hidden = true;
      $("rejoin").hidden = false;
      pollStatus(); // the last round's global accuracy lands after the last task
      break;
  }
}

/**
 * A fresh worker; `cpuBecause` (why) keeps it off WebGPU, which failed in the last one, and
 * `cpuThreads` overrides the page's `?threads=`.
 */
async function start(cpuBecause = null, cpuThreads = threads) {
  worker?.terminate();
  panics?.close();
  panics = new BroadcastChannel(`pollen-cpu-threads-${crypto.randomUUID()}`);
  panics.onmessage = ({ data }) => onEvent(data);
  worker = new Worker("worker.js", { type: "module" });
  worker.onmessage = ({ data }) => onEvent(data);
  identity ??= await claimIdentity();
  const { clientId = null, secret = null } = identity ?? {};
  worker.postMessage({
    type: "start",
    url: coordinatorUrl,
    token,
    clientId,
    secret,
    userData,
    cpuBecause,
    threads: cpuThreads,
    panics: panics.name,
  });
  $("leave").hidden = false;
  $("rejoin").hidden = true;
  setConnection("connecting", "connecting…");
}

async function pollStatus() {
  try {
    const s = await (await fetch("/api/status")).json();
    const rounds = s.rounds.filter((r) => r.accuracy !== null);
    accuracyChart.set([rounds.map((r) => r.round), rounds.map((r) => r.accuracy), rounds.map((r) => r.loss)]);
    if (s.dp) {
      const eps = s.rounds.at(-1)?.epsilon;
      $("privacy").textContent =
        `DP on: clip ${s.dp.clip}, noise ${s.dp.noise}${eps == null ? "" : `, ε = ${eps.toFixed(2)} at δ = ${s.dp.delta}`}`;
    }
    if ($("round").textContent === "–") $("round").textContent = `${s.current_round} of ${s.total_rounds}`;
  } catch {
    /* the coordinator may be restarting; the worker reconnects on its own */
  }
}

$("leave").onclick = () => worker?.postMessage({ type: "leave" });
$("rejoin").onclick = () => start();
$("folder").onchange = (ev) => $("files").onchange(ev);
$("files").onchange = async (ev) => {
  try {
    const own = await readOwnData([...ev.target.files]);
    $("data-preview").replaceChildren(...(own.preview ? [own.preview] : []));
    $("files-status").textContent = own.data ? `${own.summary}. Training on them from now on.` : own.summary;
    const pictures = own.preview?.querySelectorAll("canvas").length ?? 0;
    window.pollen.ownData = { rows: own.data?.y.length ?? 0, summary: own.summary, pictures };
    if (own.data) {
      userData = own.data;
      start();
    }
  } catch (e) {
    $("files-status").textContent = String(e?.message ?? e);
  }
};

const saved = await load("lossHistory").catch(() => null);
if (saved) {
  lossHistory[0].push(...saved[0]);
  lossHistory[1].push(...saved[1]);
  lossChart.set(lossHistory);
}
// A run with a data schema (a table) has no demo data: the page joins once the participant picks a file.
const runData = await fetch("/api/status")
  .then((r) => r.json())
  .then((s) => s.data ?? null)
  .catch(() => null);
if (runData === null) start();
else {
  setConnection("waiting", "waiting for your data");
  $("data-kind").textContent =
    runData.kind === "table"
      ? `This run trains on a table: pick a CSV with the columns ${runData.features.slice(0, 8).join(", ")}${runData.features.length > 8 ? ", …" : ""} and the label column ${runData.label}.`
      : runData.kind === "image"
        ? `This run trains on pictures of ${runData.classes.slice(0, 8).join(", ")}${runData.classes.length > 8 ? ", …" : ""}: pick a folder with one subfolder per class, or pictures named CLASS_anything.png.`
        : "This run trains on your own data: pick it below.";
}
pollStatus();
setInterval(pollStatus, 2000);

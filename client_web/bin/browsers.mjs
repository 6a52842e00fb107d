#!/usr/bin/env node
// Headless Chromium pages joining a coordinator, for `pollen simulate --backend browser` and tests:
//   node client_web/bin/browsers.mjs http://127.0.0.1:8080 --clients 3 [--token T] [--webgpu] [--screenshots DIR]
//     [--threads N]  (each page's CPU trainer threads, its ?threads=; unset, the page's default: all cores)
//     [--data-dir DIR]  (page i picks DIR/client-i.csv, or the pictures in DIR/client-i/, in its "your own
//     data" picker, as a participant would)
//     [--reload-mid-job]  (page 1 reloads once, after its first training checkpoint, and resumes the job)
//     [--lose-gpu-mid-job]  (with --webgpu: page 1's worker destroys its WebGPU device after the first
//     training checkpoint, as a driver reset would; the page must go on on the CPU and resume the job)
//     [--crash-cpu-thread-mid-job]  (page 1's worker has a thread of its CPU pool panic after the first
//     training checkpoint; the page must go on on one thread and resume the job)
// Uses the system Chromium (/usr/bin/chromium, or $POLLEN_CHROMIUM). Prints one JSON line per page
// when it stops ({page, backend, rounds, events}); exits non-zero if a page failed.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { launchChromium } from "./chromium.mjs";

const { values: a, positionals } = parseArgs({
  options: {
    clients: { type: "string" },
    token: { type: "string" },
    webgpu: { type: "boolean" },
    screenshots: { type: "string" },
    timeout: { type: "string" },
    "data-dir": { type: "string" },
    "reload-mid-job": { type: "boolean" },
    "lose-gpu-mid-job": { type: "boolean" },
    "crash-cpu-thread-mid-job": { type: "boolean" },
    threads: { type: "string" },
  },
  allowPositionals: true,
});
const [base] = positionals;
const clients = Number(a.clients ?? 1);
const timeoutMs = Number(a.timeout ?? 3600) * 1000;

/** A page's own data: `base.csv`, or every picture in the folder `base/`. */
function ownFiles(base) {
  if (existsSync(`${base}.csv`)) return `${base}.csv`;
  return readdirSync(base).map((name) => join(base, name));
}

const browser = await launchChromium({ webgpu: a.webgpu });
let failed = false;

/** Screenshots of the first page and of the dashboard mid-run, once two rounds have been trained. */
async function duringTraining(page) {
  try {
    await page.waitForFunction(() => window.pollen?.rounds.length >= 2, null, { timeout: timeoutMs, polling: 250 });
    await page.screenshot({ path: join(a.screenshots, "page-training.png"), fullPage: true });
    const dashboard = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
    await dashboard.goto(`${base}/dashboard`);
    await dashboard.waitForFunction(() => document.getElementById("rounds").children.length >= 2, null, {
      timeout: 30000,
    });
    await dashboard.screenshot({ path: join(a.screenshots, "dashboard.png"), fullPage: true });
  } catch (e) {
    console.error(`screenshots during training: ${e.message}`);
  }
}
try {
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      page.on("pageerror", (e) => console.error(`page ${i + 1}: ${e.message}`));
      const query = new URLSearchParams();
      if (a.token) query.set("token", a.token);
      if (a.threads) query.set("threads", a.threads);
      await page.goto(`${base}/${query.size ? `?${query}` : ""}`);
      if (a["data-dir"]) {
        await page.waitForFunction(() => window.pollen !== undefined, null, { timeout: 60000 });
        await page.setInputFiles("#files", ownFiles(join(a["data-dir"], `client-${i + 1}`)));
      }
      if (a.screenshots && i === 0) duringTraining(page);
      let beforeReload = null;
      if (a["reload-mid-job"] && i === 0) {
        await page.waitForFunction(() => window.pollen?.checkpoints >= 1, null, { timeout: timeoutMs, polling: 100 });
        beforeReload = await page.evaluate(() => ({ round: Number(document.getElementById("round").textContent) }));
        await page.reload();
      }
      if (a["lose-gpu-mid-job"] && i === 0) {
        await page.waitForFunction(() => window.pollen?.checkpoints >= 1, null, { timeout: timeoutMs, polling: 100 });
        const [worker] = page.workers();
        // The next command encoder the trainer asks for finds its device destroyed.
        await worker.evaluate(() => {
          const encoder = GPUDevice.prototype.createCommandEncoder;
          GPUDevice.prototype.createCommandEncoder = function (...args) {
            GPUDevice.prototype.createCommandEncoder = encoder;
            this.destroy();
            return encoder.apply(this, args);
          };
        });
      }
      if (a["crash-cpu-thread-mid-job"] && i === 0) {
        await page.waitForFunction(() => window.pollen?.checkpoints >= 1, null, { timeout: timeoutMs, polling: 100 });
        // The trainer's own worker (its pool's threads are workers too); it blocks for good once the thread dies.
        const worker = page.workers().find((w) => w.url().endsWith("/worker.js"));
        await worker.evaluate(() => setTimeout(() => self.onmessage({ data: { type: "crash-cpu-thread" } })));
      }
      await page.waitForFunction(
        () => window.pollen?.events.includes("stopped") || window.pollen?.events.includes("fatal"),
        null,
        { timeout: timeoutMs, polling: 500 },
      );
      if (a.screenshots) await page.screenshot({ path: join(a.screenshots, `page-${i + 1}.png`), fullPage: true });
      const state = await page.evaluate(() => ({
        backend: window.pollen.backend,
        reason: window.pollen.backendReason,
        threads: window.pollen.threads,
        relaxedSimd: window.pollen.relaxedSimd ?? null,
        rounds: window.pollen.rounds,
        events: [...new Set(window.pollen.events)],
        ownData: window.pollen.ownData ?? null,
        resumed: window.pollen.resumed ?? null,
        resumedAt: window.pollen.resumedAt ?? null,
        trainerStopped: window.pollen.trainerStopped ?? null,
      }));
      if (beforeReload) state.beforeReload = beforeReload;
      if (state.events.includes("fatal")) failed = true;
      console.log(JSON.stringify({ page: i + 1, ...state }));
      await context.close();
    }),
  );
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

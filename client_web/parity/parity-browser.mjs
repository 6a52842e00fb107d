// The WebGPU side of parity.mjs: a throwaway static server for the trainer's web build and
// the case files, and a Chromium page (with a SwiftShader WebGPU adapter) that runs every
// case on `Trainer.create(spec, "webgpu")` and PUTs each result back.
import { readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, resolve } from "node:path";

import { launchChromium } from "../bin/chromium.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const SERVED = [
  "client_wasm/pkg/web/",
  "client_wasm/pkg/web-relaxed/",
  "client_wasm/pkg/web-threads/",
  "client_wasm/pkg/web-threads-relaxed/",
  "client_web/parity/",
  "client_web/src/",
];
// Cross-origin isolated, as the coordinator serves the page: SharedArrayBuffer, so threads, need it.
const ISOLATED = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const TYPES = {
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
};

const PAGE = `<!doctype html><meta charset="utf-8"><title>parity</title><script type="module">
import init, { ParityProbe, Trainer } from "/client_wasm/pkg/web/pollen_trainer.js";
import { runCase } from "/client_web/parity/parity-case.mjs";
import { decodeDataFile } from "/client_web/src/data-file.js";
const bytes = async (path) => new Uint8Array(await (await fetch(path)).arrayBuffer());
try {
  await init();
  window.parityDone = 0;
  for (const c of await (await fetch("/cases/cases.json")).json()) {
    const trainer = await Trainer.create(JSON.stringify(c.spec), "webgpu");
    trainer.loadWeights(await bytes("/cases/" + c.weights));
    const out = await runCase(trainer, c, decodeDataFile(await bytes("/cases/" + c.data), c.data), ParityProbe);
    trainer.free();
    const put = await fetch("/out/" + encodeURIComponent(c.id), { method: "PUT", body: out });
    if (!put.ok) throw new Error("saving " + c.id + ": HTTP " + put.status);
    window.parityDone += 1;
  }
} catch (e) {
  window.parityError = String(e?.message ?? e);
}
</script>`;

/**
 * A throwaway static server: `page` at /, the trainer's web builds and sources, DIR's files under
 * /cases/, and `scripts` ({"/path.js": source}) as JavaScript.
 */
export function serve(dir, page = PAGE, scripts = {}) {
  return createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    try {
      if (req.method === "PUT" && path.startsWith("/out/")) {
        const chunks = [];
        for await (const chunk of req) chunks.push(chunk);
        await writeFile(join(dir, `${path.slice(5).replaceAll("/", "_")}.webgpu.safetensors`), Buffer.concat(chunks));
        return res.writeHead(204).end();
      }
      if (path === "/") return res.writeHead(200, { ...ISOLATED, "content-type": "text/html" }).end(page);
      if (Object.hasOwn(scripts, path)) {
        return res.writeHead(200, { ...ISOLATED, "content-type": "text/javascript" }).end(scripts[path]);
      }
      const rel = normalize(path.slice(1));
      const file = rel.startsWith("cases/")
        ? join(dir, rel.slice(6))
        : SERVED.some((p) => rel.startsWith(p))
          ? join(ROOT, rel)
          : null;
      if (!file || rel.includes("..")) return res.writeHead(404).end();
      res
        .writeHead(200, { ...ISOLATED, "content-type": TYPES[extname(file)] ?? "application/octet-stream" })
        .end(await readFile(file));
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
}

/** Run DIR's cases in Chromium on WebGPU; throws if any case fails or the page stalls. */
export async function inBrowser(dir, count, timeoutMs = 1_500_000) {
  const server = serve(dir);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const browser = await launchChromium({ webgpu: true });
  try {
    const page = await browser.newPage();
    page.on("console", (m) => m.type() === "error" && console.error(`page: ${m.text()}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction((n) => window.parityError !== undefined || window.parityDone === n, count, {
      timeout: timeoutMs,
      polling: 200,
    });
    const error = await page.evaluate(() => window.parityError);
    if (error) throw new Error(`WebGPU parity page: ${error}`);
  } finally {
    await browser.close();
    server.close();
  }
}

// Build the page, its worker and the dashboard into dist/ (no CDN at run time).
import { copyFileSync, mkdirSync } from "node:fs";

import * as esbuild from "esbuild";

const out = "dist";
mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: {
    page: "src/page/main.js",
    worker: "src/page/worker.js",
    "pool-thread": "src/page/pool-thread.js",
    dashboard: "src/dashboard/main.js",
  },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outdir: out,
  logLevel: "warning",
});
for (const f of ["index.html", "dashboard.html", "styles.css"]) copyFileSync(f, `${out}/${f}`);
copyFileSync("node_modules/uplot/dist/uPlot.min.css", `${out}/uPlot.min.css`);
copyFileSync("../client_wasm/pkg/web/pollen_trainer_bg.wasm", `${out}/pollen_trainer_bg.wasm`);
// The CPU backend alone with relaxed SIMD, for one-thread jobs where the browser has it.
copyFileSync("../client_wasm/pkg/web-relaxed/pollen_trainer_bg.wasm", `${out}/pollen_trainer_relaxed_bg.wasm`);
copyFileSync("../client_wasm/pkg/web-threads/pollen_trainer_bg.wasm", `${out}/pollen_trainer_threads_bg.wasm`);
// The same threaded build with relaxed SIMD's fused multiply-add, for browsers that have it; its
// JavaScript glue is the plain build's (build.sh checks), so only the module differs.
copyFileSync(
  "../client_wasm/pkg/web-threads-relaxed/pollen_trainer_bg.wasm",
  `${out}/pollen_trainer_threads_relaxed_bg.wasm`,
);
console.log(`built ${out}/`);

// Loading the WebAssembly trainer under Node, and reading data files.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { decodeDataFile } from "./data-file.mjs";

const require = createRequire(import.meta.url);

/** The wasm-bindgen module built by client_wasm/build.sh (target nodejs). */
export function loadTrainerModule() {
  try {
    return require("../pkg/node/pollen_trainer.js");
  } catch (e) {
    throw new Error(`the WebAssembly trainer is not built (run client_wasm/build.sh): ${e.message}`);
  }
}

/** A data file: safetensors with `x` (float32 [N, ...]) and `y` (int64 or int32 [N]). */
export function readDataFile(path) {
  return decodeDataFile(new Uint8Array(readFileSync(path)), path);
}

export function parseArgs(argv, spec) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      out._.push(a);
      continue;
    }
    const key = a.slice(2);
    if (spec[key] === "flag") out[key] = true;
    else if (spec[key] === undefined) throw new Error(`unknown option --${key}`);
    else out[key] = argv[++i];
  }
  return out;
}

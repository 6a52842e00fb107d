// The WebAssembly trainer under Node, and data files from disk, for the Node CLIs and tests.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { decodeDataFile } from "../src/data-file.js";

const require = createRequire(import.meta.url);

/** The wasm-bindgen module built by client_wasm/build.sh (target nodejs). */
export function loadTrainerModule() {
  try {
    return require("../../client_wasm/pkg/node/pollen_trainer.js");
  } catch (e) {
    throw new Error(`the WebAssembly trainer is not built (run client_wasm/build.sh): ${e.message}`);
  }
}

/** A data file: safetensors with `x` (float32 [N, ...]) and `y` (int64 or int32 [N]). */
export function readDataFile(path) {
  return decodeDataFile(new Uint8Array(readFileSync(path)), path);
}

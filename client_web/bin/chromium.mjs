// Launching the system Chromium headless (/usr/bin/chromium, or $POLLEN_CHROMIUM) through
// playwright-core; Playwright's own browser downloads are never used.
import { chromium } from "playwright-core";

const FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// SwiftShader: a WebGPU adapter on any machine, GPU or not (a CPU emulation, so slow).
const WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"];

/** A headless Chromium; `webgpu` gives its pages a (SwiftShader) WebGPU adapter. */
export function launchChromium({ webgpu = false } = {}) {
  return chromium.launch({
    executablePath: process.env.POLLEN_CHROMIUM ?? "/usr/bin/chromium",
    // Playwright gives every launch a fresh, throwaway user-data-dir of its own.
    args: [...FLAGS, ...(webgpu ? WEBGPU : [])],
    headless: true,
  });
}

export * from "./protocol/index.js";
export { runClient, trainOptions } from "./client.js";

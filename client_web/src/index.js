export { runClient } from "./client.js";
export { labelName, prepareTable } from "./data-schema.js";
export * from "./protocol/index.js";
export { TaskWorker, trainOptions } from "./task.js";

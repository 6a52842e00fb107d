// The page's training job across reloads, in IndexedDB: the task (its global weights included), its
// data and the trainer's latest checkpoint, one job per identity. `runClient` keeps the job while it
// trains and names its task in the next hello; the coordinator's welcome then says whether the task
// is still open (the page resumes it) or void (the job is discarded). The checkpoint lives apart from
// the job, so that the task and its data are written once and each checkpoint alone after that.
import { load, remove, save } from "./store.js";

const jobKey = (clientId) => `job:${clientId}`;
const checkpointKey = (clientId) => `checkpoint:${clientId}`;

/** The JobStore `runClient` takes (see client.js). */
export const pageJobs = {
  async load(clientId) {
    const job = await load(jobKey(clientId));
    if (!job) return null;
    const saved = await load(checkpointKey(clientId));
    // A checkpoint of an earlier job is no checkpoint of this one.
    const checkpoint = saved?.taskId === job.taskId ? saved.blob : job.checkpoint;
    return { ...job, checkpoint };
  },
  async save(clientId, job) {
    await remove(checkpointKey(clientId));
    await save(jobKey(clientId), job);
  },
  async checkpoint(clientId, taskId, blob) {
    await save(checkpointKey(clientId), { taskId, blob });
  },
  async discard(clientId) {
    await remove(jobKey(clientId));
    await remove(checkpointKey(clientId));
  },
};

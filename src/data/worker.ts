/**
 * Worker-thread entry of the DataLoader: reads, shuffles and decodes one stream of samples per
 * epoch (pipeline.ts) and posts them to the main thread, never more than the main thread has
 * given credit for (the bounded prefetch queue). Problems are posted as they happen.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ReadContext } from './dataset.js';
import { decodedSamples, type StreamPlan } from './pipeline.js';
import { Problems } from './samples.js';
import type { ToMain, ToWorker } from './loader.js';

const port = parentPort!;
const ctx = workerData as ReadContext;
let gen = -1;
let credit = 0;
let wake: (() => void) | null = null;

const post = (m: ToMain, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

async function run(g: number, plan: StreamPlan): Promise<void> {
  const problems = new Problems(0, (problem) => post({ type: 'problem', gen: g, problem }));
  try {
    for await (const s of decodedSamples(plan, ctx, problems)) {
      while (credit <= 0 && gen === g) await new Promise<void>((r) => (wake = r));
      if (gen !== g) return;
      credit--;
      post({ type: 'sample', gen: g, sample: s }, [s.data.buffer as ArrayBuffer]);
    }
    post({ type: 'end', gen: g });
  } catch (e) {
    post({ type: 'error', gen: g, message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  }
}

port.on('message', (m: ToWorker) => {
  if (m.type === 'start') {
    gen = m.gen;
    credit = m.credit;
    void run(m.gen, m.plan);
  } else if (m.type === 'credit' && m.gen === gen) {
    credit += m.n;
  } else if (m.type === 'stop') {
    gen = -1;
  }
  wake?.();
  wake = null;
});

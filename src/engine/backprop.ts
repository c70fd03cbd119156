/**
 * A backward pass that frees memory as it goes. tfjs-core's Engine.gradients keeps every
 * tensor the forward pass saved for its gradients, every intermediate gradient, and every partial
 * gradient it summed, until the whole backward pass ends: a ResNet-50 training step's peak memory
 * is about twice what it needs. This one walks the same tape in the same order through the same
 * gradient functions, and frees a node's saved tensors and its outputs' gradients as soon as the
 * node is done, as PyTorch's autograd does. Values are bit-identical to tfjs's: the same kernels
 * run on the same inputs in the same order (test/backprop.test.ts).
 */
import * as tf from '@tensorflow/tfjs';

/** A recorded op, as tfjs-core's engine keeps it on its tape. */
interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved?: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

type Gradients = (f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients?: boolean) => { value: tf.Tensor; grads: tf.Tensor[] };

/** The parts of tfjs-core's Engine this module uses (tfjs 4.22). */
interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  startTape(): void;
  endTape(): void;
  tidy<T>(nameOrFn: string | (() => T), fn?: () => T): T;
  gradients: Gradients;
}

/**
 * The nodes on a path from some x to y, in tape order, each with only the inputs that depend on
 * an x (tfjs-core's getFilteredNodesXToY, which the package does not export).
 */
function nodesFromXToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): { node: TapeNode; inputs: [string, tf.Tensor][] }[] {
  const fromX = new Set(xs.map((x) => x.id));
  const nodeFromX = tape.map((node) => {
    const hit = Object.values(node.inputs).some((t) => fromX.has(t.id));
    if (hit) for (const o of node.outputs) fromX.add(o.id);
    return hit;
  });
  const toY = new Set([y.id]);
  const nodeToY = new Array<boolean>(tape.length).fill(false);
  for (let i = tape.length - 1; i >= 0; i--) {
    if (!tape[i]!.outputs.some((o) => toY.has(o.id))) continue;
    nodeToY[i] = true;
    for (const t of Object.values(tape[i]!.inputs)) toY.add(t.id);
  }
  return tape.flatMap((node, i) => (nodeFromX[i] && nodeToY[i] ? [{ node, inputs: Object.entries(node.inputs).filter(([, t]) => fromX.has(t.id)) }] : []));
}

const engine = tf.engine() as unknown as EngineInternals;
const stockGradients = Object.getPrototypeOf(engine).gradients as Gradients;

/** Engine.gradients with the same contract (errors included), freeing as the backward pass goes. */
function releasingGradients(this: EngineInternals, f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients = false) {
  if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
  if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
  const y = this.scopedRun(
    () => this.startTape(),
    () => this.endTape(),
    () => this.tidy('forward', f),
  );
  if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
  const tape = this.state.activeTape!;
  const path = nodesFromXToY(tape, xs, y);
  if (!allowNoGradients && path.length === 0) {
    throw new Error('Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.');
  }
  // A higher-order gradient (this call inside another's f) must leave the tape to the outer call.
  const release = this.state.gradientDepth === 0;
  return this.tidy('backward', () => {
    // Gradient per tensor id. One tensor can be several ids' gradient (a gradient function may
    // pass dy through as is), so a gradient is freed when no id holds it any more.
    const grad = new Map<number, tf.Tensor>();
    const holders = new Map<tf.Tensor, number>();
    const hold = (id: number, t: tf.Tensor) => {
      grad.set(id, t);
      holders.set(t, (holders.get(t) ?? 0) + 1);
    };
    const free = (t: tf.Tensor) => {
      if (t !== dy) t.dispose();
    };
    const drop = (t: tf.Tensor) => {
      const n = holders.get(t) ?? 0;
      if (n > 1) holders.set(t, n - 1);
      else {
        holders.delete(t);
        free(t);
      }
    };
    hold(y.id, dy ?? tf.ones(y.shape));
    for (let i = path.length - 1; i >= 0; i--) {
      const { node, inputs } = path[i]!;
      if (node.gradient == null) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      // All of the node's input gradients in one tidy: a gradient function's own temporaries
      // (and gradients computed for inputs that need none) are freed here, not at the end.
      const dxs = this.tidy(() => {
        const thunks = node.gradient!(node.outputs.map((o) => grad.get(o.id) ?? null));
        return inputs.map(([name]) => {
          const thunk = thunks[name];
          if (thunk == null) throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(thunks)}.`);
          return thunk();
        });
      });
      inputs.forEach(([name, x], k) => {
        const dx = dxs[k]!;
        if (dx.dtype !== 'float32') {
          throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`);
        }
        if (!tf.util.arraysEqual(dx.shape, x.shape)) {
          throw new Error(
            `Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`,
          );
        }
        const sum = grad.get(x.id);
        if (sum == null) hold(x.id, dx);
        else {
          grad.delete(x.id);
          hold(x.id, tf.add(sum, dx));
          drop(sum);
        }
      });
      if (!release) continue;
      // A partial gradient that went into a sum is no longer needed.
      for (const dx of new Set(dxs)) if (!holders.has(dx)) free(dx);
      for (const o of node.outputs) {
        const g = grad.get(o.id);
        if (g == null) continue;
        grad.delete(o.id);
        drop(g);
      }
      for (const t of node.saved ?? []) t.dispose();
    }
    const grads = xs.map((x) => grad.get(x.id)!);
    if (release) {
      for (const node of tape) for (const t of node.saved ?? []) t.dispose();
      this.state.activeTape = null;
    }
    return { value: y, grads };
  });
}

/** Switches Engine.gradients (tf.grad, tf.variableGrads, optimisers) between this and tfjs's own. */
export function setReleasingBackprop(on: boolean): void {
  engine.gradients = on ? releasingGradients : stockGradients;
}

export function releasingBackprop(): boolean {
  return engine.gradients === releasingGradients;
}

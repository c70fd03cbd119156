/**
 * Gradients with respect to an inner activation of a LayersModel. tfjs differentiates only with
 * respect to a function's inputs, so the graph is cut at the activation A: `forward` computes A,
 * the output and the boundary (tensors that do not depend on A but feed layers that do, e.g. a
 * residual shortcut that jumps over A), and `head` recomputes the output from A and the boundary
 * alone, so it can run under the gradient tape with A as its input. Only the layers after A run
 * twice; the backward pass stops at A.
 *
 * The layers run one by one from their symbolic inputs (SymbolicTensor.inputs), as the model's own
 * executor does, in inference mode; the model is not modified (no new nodes are added to it).
 */
import * as tf from '@tensorflow/tfjs';

type Sym = tf.SymbolicTensor;

/**
 * Values of `fetches`, computing each tensor from its layer and inputs unless `feeds` gives it.
 * A layer with several outputs runs once per output used (none of our models has one).
 */
export function evaluate(fetches: Sym[], feeds: Map<Sym, tf.Tensor>): tf.Tensor[] {
  const values = new Map(feeds);
  const value = (s: Sym): tf.Tensor => {
    let v = values.get(s);
    if (v === undefined) {
      if (s.inputs.length === 0) throw new Error(`no value for the model input '${s.name}'`);
      const args = s.inputs.map(value);
      const out = s.sourceLayer.apply(args.length === 1 ? args[0] : args, { ...s.callArgs, training: false }) as tf.Tensor | tf.Tensor[];
      v = Array.isArray(out) ? out[s.outputTensorIndex ?? 0] : out;
      values.set(s, v);
    }
    return v;
  };
  return fetches.map(value);
}

/** Every tensor `output` is computed from (itself included). */
export function ancestors(output: Sym): Set<Sym> {
  const seen = new Set<Sym>();
  const stack = [output];
  while (stack.length > 0) {
    const s = stack.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    stack.push(...s.inputs);
  }
  return seen;
}

export class GraphCut {
  /** Tensors computed without A that layers after A read. */
  readonly boundary: Sym[];

  constructor(
    readonly input: Sym,
    readonly cut: Sym,
    readonly output: Sym,
  ) {
    const dependent = new Map<Sym, boolean>();
    const depends = (s: Sym): boolean => {
      let d = dependent.get(s);
      if (d === undefined) {
        d = s === cut || s.inputs.some(depends);
        dependent.set(s, d);
      }
      return d;
    };
    if (!depends(output)) throw new Error(`'${cut.sourceLayer.name}' does not feed the output '${output.sourceLayer.name}'`);
    const boundary = new Set<Sym>();
    const seen = new Set<Sym>();
    const walk = (s: Sym): void => {
      if (s === cut || seen.has(s)) return;
      seen.add(s);
      for (const i of s.inputs) {
        if (depends(i)) walk(i);
        else boundary.add(i);
      }
    };
    walk(output);
    this.boundary = [...boundary];
  }

  /** A, the output and the boundary values for input x. */
  forward(x: tf.Tensor): { activation: tf.Tensor; output: tf.Tensor; boundary: tf.Tensor[] } {
    const [activation, output, ...boundary] = evaluate([this.cut, this.output, ...this.boundary], new Map([[this.input, x]]));
    return { activation, output, boundary };
  }

  /** The output as a function of A (boundary values from `forward` of the same input). */
  head(activation: tf.Tensor, boundary: tf.Tensor[]): tf.Tensor {
    const feeds = new Map<Sym, tf.Tensor>(this.boundary.map((s, i) => [s, boundary[i]]));
    feeds.set(this.cut, activation);
    return evaluate([this.output], feeds)[0];
  }
}

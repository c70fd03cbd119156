/**
 * The model an explainer explains: any tfjs LayersModel with one NHWC image input whose last
 * output is the logits (pre-softmax), e.g. the classifier of a CASM checkpoint (outputs: five
 * feature maps, then logits). Owns the checks every explainer shares: target classes and layer names.
 */
import * as tf from '@tensorflow/tfjs';
import { ancestors, GraphCut } from './graphCut.js';

/** Target classes, one per image: numbers or an int tensor. */
export type Targets = number[] | tf.Tensor1D;

export class Classifier {
  readonly input: tf.SymbolicTensor;
  readonly logits: tf.SymbolicTensor;
  readonly classes: number;
  /** [H, W, C] of the input. */
  readonly inputShape: [number, number, number];
  /** Layers Grad-CAM can use: a single rank-4 output that feeds the logits, in model order. */
  readonly spatialLayers: Map<string, tf.SymbolicTensor>;

  constructor(readonly model: tf.LayersModel) {
    if (model.inputs.length !== 1 || model.inputs[0].rank !== 4) {
      throw new Error(`model '${model.name}': explainers need one NHWC image input, got ${model.inputs.map((s) => `[${s.shape}]`).join(', ')}`);
    }
    this.input = model.inputs[0];
    this.logits = model.outputs[model.outputs.length - 1];
    if (this.logits.rank !== 2) throw new Error(`model '${model.name}': the last output must be the logits [N, classes], got [${this.logits.shape}]`);
    // Gradients of a probability are not the spec's dS_c/dx of the logit; say so rather than explain the wrong thing.
    if ((this.logits.sourceLayer.getConfig() as { activation?: string }).activation === 'softmax') {
      throw new Error(`model '${model.name}': the last output '${this.logits.sourceLayer.name}' applies softmax; explainers need the logits`);
    }
    this.classes = this.logits.shape[1] as number;
    const [h, w, c] = this.input.shape.slice(1) as number[];
    this.inputShape = [h, w, c];
    const feeding = ancestors(this.logits);
    const order = new Map(model.layers.map((l, i) => [l.name, i]));
    const spatial = [...feeding]
      .filter((s) => s.rank === 4 && s.inputs.length > 0)
      .sort((a, b) => order.get(a.sourceLayer.name)! - order.get(b.sourceLayer.name)!);
    this.spatialLayers = new Map(spatial.map((s) => [s.sourceLayer.name, s]));
  }

  /** Logits of x, inference mode. */
  logitsOf(x: tf.Tensor4D): tf.Tensor2D {
    const out = this.model.apply(x, { training: false }) as tf.Tensor | tf.Tensor[];
    return (Array.isArray(out) ? out[out.length - 1] : out) as tf.Tensor2D;
  }

  /** The argmax class of each image. */
  predict(x: tf.Tensor4D): tf.Tensor1D {
    return tf.tidy(() => tf.argMax(this.logitsOf(x), 1) as tf.Tensor1D);
  }

  /** sum_b logits[b, targets[b]]: its gradient holds each image's dS_c/dx, images being independent. */
  targetScore(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
    return tf.sum(tf.mul(logits, tf.oneHot(targets, this.classes)));
  }

  /**
   * Checks given targets against the batch and the class range; returns them as an int32 tensor
   * (the caller disposes it), or null when none are given (the explainer then takes the argmax).
   */
  checkTargets(targets: Targets | undefined, n: number): tf.Tensor1D | null {
    if (targets === undefined) return null;
    const values = Array.isArray(targets) ? targets : Array.from(targets.dataSync());
    if (values.length !== n) throw new Error(`${values.length} target classes for ${n} images`);
    for (const t of values) {
      if (!Number.isInteger(t) || t < 0 || t >= this.classes) {
        throw new RangeError(`target class ${t} is outside the model's range 0..${this.classes - 1}`);
      }
    }
    return tf.tensor1d(values, 'int32');
  }

  /** The default Grad-CAM layer: the last spatial one (for the ResNet, stage 4's output). */
  get lastSpatialLayer(): string {
    const names = [...this.spatialLayers.keys()];
    if (names.length === 0) throw new Error(`model '${this.model.name}' has no rank-4 layer feeding the logits`);
    return names[names.length - 1];
  }

  /** The model cut at a named layer (see GraphCut); an unknown name lists the valid ones. */
  cutAt(layer: string): GraphCut {
    const s = this.spatialLayers.get(layer);
    if (!s) {
      throw new Error(`unknown layer '${layer}' for model '${this.model.name}': valid layers are ${[...this.spatialLayers.keys()].join(', ')}`);
    }
    return new GraphCut(this.input, s, this.logits);
  }
}

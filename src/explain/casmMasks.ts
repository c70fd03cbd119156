/**
 * CASM behind the explainer interface: the masker's masks (already in [0, 1] at the input size),
 * read off one inference pass. The masks are class-agnostic; `targets` only reports the classes
 * (the argmax unless given), so CASM sits in the same tables as the class-specific methods.
 */
import * as tf from '@tensorflow/tfjs';
import type { CasmModel } from '../models/casmModel.js';
import { Classifier } from './classifier.js';
import { Explainer, targetsOr, type Attribution } from './explainer.js';

export class CasmMasks extends Explainer {
  readonly name: string = 'casm';

  constructor(private readonly model: CasmModel) {
    super(new Classifier(model.classifier));
  }

  attribute(x: tf.Tensor4D, targets: tf.Tensor1D | null): Attribution {
    const { masks, logits } = this.model.inference(x);
    const used = targetsOr(targets, logits);
    logits.dispose();
    return { raw: masks, targets: used };
  }

  display(raw: tf.Tensor4D): tf.Tensor3D {
    return tf.squeeze(raw, [3]);
  }
}

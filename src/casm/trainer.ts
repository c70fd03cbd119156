/**
 * CasmTrainer: the models, optimisers and pool of a run, and `iteration`, the whole CASM training
 * iteration of spec section 2 in one function.
 */
import * as tf from '@tensorflow/tfjs';
import type { TensorToWrite } from '../io/safetensors.js';
import { CasmModel } from '../models/casmModel.js';
import type { Masker } from '../models/masker.js';
import { buildResNet } from '../models/resnet.js';
import { setWeightArrays, weightArrays } from '../models/weightArrays.js';
import { Rng } from '../util/rng.js';
import { cutMix, mixedCrossEntropy } from './cutMix.js';
import { stopGradient } from '../util/stopGradient.js';
import { architectureKey, learningRates, type TrainConfig } from './config.js';
import { optimizerArrays, setOptimizerArrays } from './optimizerState.js';
import { ClassifierPool, type PoolChoice, type Snapshot } from './pool.js';
import { classifierLoss, correct, crossEntropy, maskerLoss } from './score.js';

/** What one iteration reports (plain numbers: read once per iteration in one transfer). */
export interface StepStats {
  step: number;
  classifierLoss: number;
  maskerLoss: number;
  /** Accuracy of the current classifier on the clean batch (before its update). */
  accClean: number;
  /** Accuracy of the pool's classifier on the masked-out batch (what the masker fights). */
  accMasked: number;
  /** Mean entropy of the pool classifier's prediction on the masked-out batch. */
  entropy: number;
  areaMean: number;
  /** Standard deviation of the per-image mask area across the batch. */
  areaStd: number;
  /** Fraction of the batch under the area penalty (adaptive lambda). */
  gated: number;
  /** Mean total variation of the masks. */
  tv: number;
  /** Masked-in cross-entropy on clean-correct images (0 when the term is off). */
  maskedIn: number;
  lambda: number;
  lrClassifier: number;
  lrMasker: number;
  /** Whether the masker was scored against the current classifier or a snapshot. */
  scoredBy: PoolChoice['kind'];
}

export class NonFiniteLossError extends Error {}

/** Everything a run needs to continue exactly where it stopped, as plain values: what a checkpoint holds. */
export interface TrainerState {
  step: number;
  rngState: number;
  config: TrainConfig;
  /** Every classifier weight (BatchNorm statistics too), as weightArrays names them. */
  classifier: TensorToWrite[];
  masker: TensorToWrite[];
  /** SGD momentum buffers. */
  classifierOptimizer: TensorToWrite[];
  /** Adam moments and iteration count. */
  maskerOptimizer: TensorToWrite[];
  pool: Snapshot[];
}

export class CasmTrainer {
  /** The classifier and the masker this trainer trains. */
  readonly model: CasmModel;
  readonly classifier: tf.LayersModel;
  readonly masker: Masker;
  readonly pool: ClassifierPool;
  readonly rng: Rng;
  /** Iterations done so far. */
  step = 0;
  readonly classifierOpt: tf.MomentumOptimizer;
  readonly maskerOpt: tf.AdamOptimizer;
  /** Built on first use: the classifier architecture that runs pool snapshots in inference mode. */
  private snapshotModel: tf.LayersModel | null = null;
  private loadedSnapshot: Snapshot | null = null;

  constructor(readonly config: TrainConfig) {
    this.rng = new Rng(config.seed);
    this.model = new CasmModel(config.arch, config.masker, config.seed);
    this.classifier = this.model.classifier;
    this.masker = this.model.masker;
    this.pool = new ClassifierPool(config.thinning);
    const lr = learningRates(config.optim, 0);
    this.classifierOpt = tf.train.momentum(lr.classifier, config.optim.momentum);
    this.maskerOpt = tf.train.adam(lr.masker, 0.9, 0.999, 1e-8);
  }

  get epoch(): number {
    return Math.floor(this.step / this.config.stepsPerEpoch);
  }

  /** One iteration on a batch (x NHWC normalised images, y int32 labels): warm-up, then CASM. */
  iteration(x: tf.Tensor4D, y: tf.Tensor1D): StepStats {
    return this.step < this.config.warmupSteps ? this.warmup(x, y) : this.casmIteration(x, y);
  }

  /** Classifier alone on clean images: SGD on the cross-entropy (CutMix'd batches with probability cutMix). */
  private warmup(x: tf.Tensor4D, y: tf.Tensor1D): StepStats {
    const lr = this.scheduleLearningRates();
    const [loss, acc] = tf.tidy(() => {
      const { loss, aside: logits } = this.classifierUpdate(() => {
        const mix = this.config.cutMix > 0 && this.rng.next() < this.config.cutMix ? cutMix(x, y, this.rng) : null;
        const logits = tf.keep(this.model.classify(this.noisy(mix?.x ?? x), true).logits);
        return { loss: mix ? mixedCrossEntropy(logits, y, mix) : crossEntropy(logits, y), aside: logits };
      });
      const acc = tf.mean(correct(logits, y));
      logits.dispose();
      return tf.stack([loss, acc]).dataSync();
    });
    this.step += 1;
    return {
      step: this.step,
      classifierLoss: loss,
      maskerLoss: NaN,
      accClean: acc,
      accMasked: NaN,
      entropy: NaN,
      areaMean: NaN,
      areaStd: NaN,
      gated: NaN,
      tv: NaN,
      maskedIn: NaN,
      lambda: this.config.lambdaR,
      lrClassifier: lr.classifier,
      lrMasker: lr.masker,
      scoredBy: 'current',
    };
  }

  /** One CASM iteration (spec section 2). */
  private casmIteration(x: tf.Tensor4D, y: tf.Tensor1D): StepStats {
    const cfg = this.config;
    // F's f_0 and the pool start from the classifier as CASM training begins (after any warm-up).
    this.pool.initialize(() => this.classifierWeights());
    const lr = this.scheduleLearningRates();
    const kept: tf.Tensor[] = [];
    const keep = <T extends tf.Tensor>(t: T): T => {
      kept.push(tf.keep(t));
      return t;
    };
    try {
      return tf.tidy(() => {
        // The classifier f' that will see the masked-out image in the masker step (step 3's table).
        const choice = this.pool.choose(this.rng);

        // 1-2. Features and logits of f_k, masks, and the classifier update on clean + masked-out images.
        const { loss: clsLoss, aside: clean } = this.classifierStep(x, y, choice, keep);
        const { features, logits: cleanLogits } = clean;
        const cleanCorrect = correct(cleanLogits, y);
        // The images the masker's terms count (c_b of the score).
        const counted = cfg.maskerImages === 'all' ? tf.onesLike(cleanCorrect) : cleanCorrect;

        // 3. Pool update (thinning): snapshot the updated classifier when the strategy says so.
        this.pool.update(this.step - cfg.warmupSteps, () => this.classifierWeights(), this.rng);

        // 4. Masker update: masks recomputed under the tape (same weights, same input, same masks),
        // scored by f' as it is now. The decoder's BN statistics were updated by step 1 already.
        const scorer = this.scorer(choice);
        const {
          value: mLoss,
          grads,
          aside: { parts, maskedCorrect },
        } = withFrozenStatistics(this.masker.models, () =>
          gradsWith(() => {
            const m = this.masker.apply(x, features, true);
            const maskedLogits = scorer(maskedOut(x, m));
            // The masked-in pass leaves the classifier's BatchNorm statistics as they were.
            const maskedInLogits = cfg.maskTerms.maskedIn > 0 ? scorer(tf.mul(m, x) as tf.Tensor4D, true) : null;
            const parts = maskerLoss(maskedLogits, y, counted, m, cfg.lambdaR, cfg.score, cfg.maskTerms, maskedInLogits);
            [parts.area, parts.entropy, parts.gated, parts.tv, parts.maskedIn].forEach(keep);
            return { loss: parts.loss, aside: { parts, maskedCorrect: keep(correct(maskedLogits, y)) } };
          }, variables(this.masker.trainableWeights)),
        );
        this.checkFinite(mLoss, 'masker loss');
        this.applyGradients(this.maskerOpt, this.masker.trainableWeights, grads, cfg.optim.clipNorm);

        const [areaMean, areaVar] = [tf.mean(parts.area), tf.moments(parts.area).variance];
        const values = tf
          .stack([
            clsLoss,
            mLoss,
            tf.mean(cleanCorrect),
            tf.mean(maskedCorrect),
            parts.entropy,
            areaMean,
            tf.sqrt(areaVar),
            parts.gated,
            parts.tv,
            parts.maskedIn,
          ])
          .dataSync();
        this.step += 1;
        return {
          step: this.step,
          classifierLoss: values[0],
          maskerLoss: values[1],
          accClean: values[2],
          accMasked: values[3],
          entropy: values[4],
          areaMean: values[5],
          areaStd: values[6],
          gated: values[7],
          tv: values[8],
          maskedIn: values[9],
          lambda: cfg.lambdaR,
          lrClassifier: lr.classifier,
          lrMasker: lr.masker,
          scoredBy: choice.kind,
        };
      });
    } finally {
      for (const t of kept) t.dispose();
    }
  }

  /** A copy of the trainer's state. */
  async state(): Promise<TrainerState> {
    return {
      step: this.step,
      rngState: this.rng.state,
      config: this.config,
      classifier: weightArrays([this.classifier]),
      masker: weightArrays(this.masker.models),
      classifierOptimizer: await optimizerArrays(this.classifierOpt),
      maskerOptimizer: await optimizerArrays(this.maskerOpt),
      pool: [...this.pool.snapshots], // snapshots are replaced, never written into
    };
  }

  /** Continues from `state`, which must be of the same architecture; errors name the part at fault. */
  async restore(state: TrainerState): Promise<void> {
    if (architectureKey(state.config) !== architectureKey(this.config)) {
      throw new Error(`architecture differs: the state's ${architectureKey(state.config)}, this trainer's ${architectureKey(this.config)}`);
    }
    const sizes = this.classifier.weights.map((w) => tf.util.sizeFromShape(w.shape as number[]));
    state.pool.forEach((s, j) => {
      if (s.weights.length !== sizes.length || s.weights.some((w, i) => w.length !== sizes[i])) {
        throw new Error(`pool snapshot ${j}: ${s.weights.length} weights that do not fit the classifier's ${sizes.length}`);
      }
    });
    setWeightArrays([this.classifier], state.classifier, 'classifier weights');
    setWeightArrays(this.masker.models, state.masker, 'masker weights');
    await setOptimizerArrays(this.classifierOpt, state.classifierOptimizer);
    await setOptimizerArrays(this.maskerOpt, state.maskerOptimizer);
    this.pool.snapshots = [...state.pool];
    this.loadedSnapshot = null;
    this.step = state.step;
    this.rng.state = state.rngState;
  }

  /** Frees every tensor the trainer owns: models, optimiser slots, the snapshot model. */
  dispose(): void {
    this.model.dispose();
    this.snapshotModel?.dispose();
    this.classifierOpt.dispose();
    this.maskerOpt.dispose();
    // tfjs 4.22's MomentumOptimizer.dispose() skips SGDOptimizer's learning-rate scalar `c`
    // (disposing a disposed tensor is a no-op, should a later tfjs fix that).
    (this.classifierOpt as unknown as { c?: tf.Tensor }).c?.dispose();
  }

  /** Sets both optimisers' learning rates for the current epoch (step schedule). */
  private scheduleLearningRates(): { classifier: number; masker: number } {
    const lr = learningRates(this.config.optim, this.epoch);
    this.classifierOpt.setLearningRate(lr.classifier);
    // AdamOptimizer has no setter; its learningRate field is read on every update.
    (this.maskerOpt as unknown as { learningRate: number }).learningRate = lr.masker;
    return lr;
  }

  /** SmoothGrad-style training noise: x + N(0, (s * (max(x) - min(x)))^2), range per image. */
  private noisy(x: tf.Tensor4D): tf.Tensor4D {
    const s = this.config.trainNoise;
    if (s <= 0) return x;
    return tf.tidy(() => {
      const range = tf.sub(tf.max(x, [1, 2, 3], true), tf.min(x, [1, 2, 3], true));
      return tf.add(x, tf.mul(tf.randomNormal(x.shape, 0, 1, 'float32', this.rng.seed()), tf.mul(s, range))) as tf.Tensor4D;
    });
  }

  /**
   * Steps 1-2 of the iteration: f_k's features and logits of x, the masks they give (no gradient
   * to the masker), and the classifier's update, one of three variants.
   */
  private classifierStep(x: tf.Tensor4D, y: tf.Tensor1D, choice: PoolChoice, keep: Keep): { loss: tf.Scalar; aside: CleanPass } {
    if (this.config.thinning === 'F') return this.fixedClassifier(x, y, keep);
    return this.config.classifierStep === 'joint' ? this.jointClassifierStep(x, y, keep) : this.twoClassifierSteps(x, y, choice, keep);
  }

  /** Thinning F, the classifier-dependent baseline: f_0 is fixed, it only provides features (its loss is reported). */
  private fixedClassifier(x: tf.Tensor4D, y: tf.Tensor1D, keep: Keep): { loss: tf.Scalar; aside: CleanPass } {
    const clean = this.cleanPass(x, false, x, keep);
    return { loss: classifierLoss(clean.logits, this.model.classify(maskedOut(x, clean.masks), false).logits, y), aside: clean };
  }

  /** One step on the loss of the clean and the masked-out image together (the paper's). */
  private jointClassifierStep(x: tf.Tensor4D, y: tf.Tensor1D, keep: Keep): { loss: tf.Scalar; aside: CleanPass } {
    return this.classifierUpdate(() => {
      const clean = this.cleanPass(this.noisy(x), true, x, keep);
      return { loss: classifierLoss(clean.logits, this.classifyMasked(this.noisy(maskedOut(x, clean.masks))), y), aside: clean };
    });
  }

  /** The reference code's: a clean step, then a masked step only if the current classifier is f'. */
  private twoClassifierSteps(x: tf.Tensor4D, y: tf.Tensor1D, choice: PoolChoice, keep: Keep): { loss: tf.Scalar; aside: CleanPass } {
    const first = this.classifierUpdate(() => {
      const clean = this.cleanPass(this.noisy(x), true, x, keep);
      return { loss: crossEntropy(clean.logits, y), aside: clean };
    });
    if (choice.kind === 'current') {
      this.classifierUpdate(() => ({ loss: crossEntropy(this.classifyMasked(this.noisy(maskedOut(x, first.aside.masks))), y), aside: null }));
    }
    return first;
  }

  /** The classifier on `input` (features and logits kept) and the masks of x decoded from its features. */
  private cleanPass(input: tf.Tensor4D, training: boolean, x: tf.Tensor4D, keep: Keep): CleanPass {
    const { features, logits } = this.model.classify(input, training);
    const kept = features.map(keep);
    return { features: kept, logits: keep(logits), masks: keep(stopGradient(this.masker.apply(x, kept, true))) };
  }

  /** One SGD step of the classifier on f's loss; returns the loss (before the step) and what f set aside. */
  private classifierUpdate<T>(f: () => { loss: tf.Scalar; aside: T }): { loss: tf.Scalar; aside: T } {
    const { value, grads, aside } = gradsWith(f, variables(this.classifier.trainableWeights));
    this.checkFinite(value, 'classifier loss');
    this.applyGradients(this.classifierOpt, this.classifier.trainableWeights, grads, 0);
    return { loss: value, aside };
  }

  /** The function giving f' logits: the current classifier (training mode, as the reference) or a snapshot. */
  private scorer(choice: PoolChoice): (img: tf.Tensor4D, keepStatistics?: boolean) => tf.Tensor2D {
    if (choice.kind === 'current') {
      return (img, keepStatistics) => this.classifyMasked(img, keepStatistics);
    }
    const model = this.loadSnapshot(this.pool.snapshots[choice.index]);
    return (img) => (model.apply(img, { training: false }) as tf.Tensor[])[5] as tf.Tensor2D; // a snapshot: a plain ResNet
  }

  /**
   * Logits of the current classifier (training mode) on a masked image. `keepStatistics` (by
   * default with bnStatistics 'clean') leaves its BatchNorm moving statistics as they were: they
   * then describe clean images only, the images it sees at inference, where the masker reads its
   * features.
   */
  private classifyMasked(img: tf.Tensor4D, keepStatistics = this.config.bnStatistics === 'clean'): tf.Tensor2D {
    const run = () => this.model.classify(img, true).logits;
    return keepStatistics ? withFrozenStatistics([this.classifier], run) : run();
  }

  private loadSnapshot(snapshot: Snapshot): tf.LayersModel {
    this.snapshotModel ??= buildResNet(this.config.arch, 'snapshot');
    if (this.loadedSnapshot !== snapshot) {
      const model = this.snapshotModel;
      tf.tidy(() => model.setWeights(snapshot.weights.map((w, i) => tf.tensor(w, model.weights[i].shape as number[]))));
      this.loadedSnapshot = snapshot;
    }
    return this.snapshotModel;
  }

  /** A copy of every classifier weight (BN statistics too), off the accelerator. */
  classifierWeights(): Float32Array[] {
    return this.classifier.getWeights().map((w) => Float32Array.from(w.dataSync()));
  }

  /**
   * Global-norm clipping (if clip > 0), then PyTorch-style L2 weight decay (g + wd * w), then the
   * optimiser step. Clipping first matches clip_grad_norm_ before optimizer.step() in PyTorch.
   */
  private applyGradients(opt: tf.Optimizer, weights: tf.LayerVariable[], grads: tf.NamedTensorMap, clip: number): void {
    tf.tidy(() => {
      const wd = this.config.optim.weightDecay;
      const names = variables(weights).map((v) => v.name);
      // Without clipping, no rescaling pass over the gradients (25M of them for ResNet-50).
      let scale: tf.Scalar | null = null;
      if (clip > 0) {
        const norm = tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n])))));
        scale = tf.minimum(1, tf.div(clip, tf.add(norm, 1e-6))) as tf.Scalar;
      }
      const update: tf.NamedTensorMap = {};
      names.forEach((n, i) => {
        const g = scale === null ? grads[n]! : tf.mul(grads[n]!, scale);
        update[n] = tf.add(g, tf.mul(wd, weights[i].read()));
      });
      opt.applyGradients(update);
    });
  }

  private checkFinite(loss: tf.Scalar, what: string): void {
    const v = loss.dataSync()[0];
    if (!Number.isFinite(v)) {
      throw new NonFiniteLossError(`step ${this.step + 1}: ${what} is ${v}; stopping before the update (the last checkpoint is untouched)`);
    }
  }
}

/** The engine variables behind layer weights (LayerVariable.read() is typed as a plain Tensor). */
/** Registers a tensor to outlive the iteration's tidy scopes (freed when the iteration ends). */
type Keep = <T extends tf.Tensor>(t: T) => T;

/** Steps 1-2's forward pass: f_k's five feature maps and logits of the image, the masks from them. */
interface CleanPass {
  features: tf.Tensor4D[];
  logits: tf.Tensor2D;
  masks: tf.Tensor4D;
}

/** The image with the mask's pixels removed: (1 - m) x. */
const maskedOut = (x: tf.Tensor4D, m: tf.Tensor4D) => tf.mul(tf.sub(1, m), x) as tf.Tensor4D;

/**
 * tf.variableGrads of f's loss, returning also what f set aside beside it (tensors f kept: the
 * gradient's tidy scope frees the rest). The one place a loss closure hands values out.
 */
function gradsWith<T>(f: () => { loss: tf.Scalar; aside: T }, vars: tf.Variable[]): { value: tf.Scalar; grads: tf.NamedTensorMap; aside: T } {
  let aside: { value: T } | null = null;
  const { value, grads } = tf.variableGrads(() => {
    const r = f();
    aside = { value: r.aside };
    return r.loss;
  }, vars);
  return { value, grads, aside: aside!.value };
}

function variables(weights: tf.LayerVariable[]): tf.Variable[] {
  return weights.map((w) => w.read() as tf.Variable);
}

/**
 * Runs fn with the models' BatchNorm moving statistics restored afterwards, for a second
 * training-mode forward over a batch whose statistics were already taken into account.
 */
function withFrozenStatistics<T>(models: tf.LayersModel[], fn: () => T): T {
  const stats = models.flatMap((m) => m.nonTrainableWeights);
  const saved = stats.map((v) => tf.keep(v.read().clone()));
  try {
    return fn();
  } finally {
    stats.forEach((v, i) => v.write(saved[i]));
    for (const t of saved) t.dispose();
  }
}

/**
 * Everything a training run is made of, with the spec's defaults. The resolved config is written
 * into every checkpoint; a resume checks the architecture against it.
 */
import { DEFAULT_MASKER, type MaskerConfig } from '../models/masker.js';
import { RESNET50, type ResNetConfig } from '../models/resnet.js';
import type { Thinning } from './pool.js';
import { defaultLambda, NO_MASK_TERMS, type MaskTerms, type Score } from './score.js';

export type ClassifierStep = 'joint' | 'two-step';
export const BN_STATISTICS = ['all', 'clean'] as const;
export type BnStatistics = (typeof BN_STATISTICS)[number];
export const MASKER_IMAGES = ['correct', 'all'] as const;
export type MaskerImages = (typeof MASKER_IMAGES)[number];

export interface OptimConfig {
  /** Classifier: SGD with momentum 0.9. */
  classifierLr: number;
  /** Masker: Adam. */
  maskerLr: number;
  momentum: number;
  /** L2 weight decay added to the gradients, as PyTorch's optimisers do, for both. */
  weightDecay: number;
  /** Both learning rates are multiplied by lrDecay every lrDecayEpochs epochs. */
  lrDecayEpochs: number;
  lrDecay: number;
  /** Masker gradient global-norm clip. */
  clipNorm: number;
}

export interface TrainConfig {
  arch: ResNetConfig;
  masker: MaskerConfig;
  thinning: Thinning;
  score: Score;
  /** lambda_R; the preset of (thinning, score, classes) unless given. */
  lambdaR: number;
  /** Mask terms beyond the paper's objective (total variation, masked-in classification); 0 = off. */
  maskTerms: MaskTerms;
  /**
   * What the classifier's BatchNorm moving statistics average: 'all' the images it is trained on
   * in training mode, masked-out ones too (the reference code), or 'clean' images only.
   */
  bnStatistics: BnStatistics;
  /**
   * Which images of a batch train the masker: 'correct', those the current classifier gets right
   * (the reference's adaptive lambda: the score and the masked-in term count only there, the area
   * only where the masked-out image is then wrong), or 'all': every image counts as if right, so
   * the masker also learns what to do where the classifier errs, as it must at inference.
   */
  maskerImages: MaskerImages;
  /** 'joint': eq. 8 in one step (default); 'two-step': the reference's clean then masked steps. */
  classifierStep: ClassifierStep;
  /** SmoothGrad-style input noise level s for the classifier's training inputs; 0 = off. */
  trainNoise: number;
  /** Probability that a warm-up batch is CutMix'd (cutMix.ts); 0 = off. */
  cutMix: number;
  /**
   * Iterations that train the classifier alone (clean cross-entropy) before CASM starts. The
   * paper starts from a pretrained classifier; a masker scored against an untrained one learns
   * only the area penalty and collapses to empty masks. 0 with --classifier-weights.
   */
  warmupSteps: number;
  optim: OptimConfig;
  batchSize: number;
  epochs: number;
  /** Iterations per epoch (the reference runs 20% of ImageNet per epoch). */
  stepsPerEpoch: number;
  seed: number;
}

export const DEFAULT_OPTIM: OptimConfig = {
  classifierLr: 1e-3,
  maskerLr: 1e-3,
  momentum: 0.9,
  weightDecay: 1e-4,
  lrDecayEpochs: 20,
  lrDecay: 0.1,
  clipNorm: 10,
};

export function defaultTrainConfig(overrides: Partial<TrainConfig> = {}): TrainConfig {
  const thinning = overrides.thinning ?? 'L100';
  const score = overrides.score ?? 'entropy';
  const arch = overrides.arch ?? RESNET50;
  return {
    arch,
    masker: DEFAULT_MASKER,
    thinning,
    score,
    lambdaR: defaultLambda(thinning, score, arch.classes),
    maskTerms: NO_MASK_TERMS,
    bnStatistics: 'all',
    maskerImages: 'correct',
    classifierStep: 'joint',
    trainNoise: 0,
    cutMix: 0,
    warmupSteps: 0,
    optim: DEFAULT_OPTIM,
    batchSize: 128,
    epochs: 60,
    stepsPerEpoch: 1000,
    seed: 0,
    ...overrides,
  };
}

/** Learning rates at an epoch under the step schedule. */
export function learningRates(optim: OptimConfig, epoch: number): { classifier: number; masker: number } {
  const factor = optim.lrDecay ** Math.floor(epoch / optim.lrDecayEpochs);
  return { classifier: optim.classifierLr * factor, masker: optim.maskerLr * factor };
}

/** The fields that decide the shapes of every weight: a resume must match them exactly. */
export function architectureKey(cfg: TrainConfig): string {
  return JSON.stringify({ arch: cfg.arch, masker: cfg.masker });
}

/**
 * bfloat16 mixed precision on the native engine (`--precision bf16`), split the way PyTorch's CPU
 * autocast and TensorFlow's oneDNN bf16 rewrite split it: the convolutions, forward and both
 * gradients, run in bfloat16 (TensorFlow's kernels accumulate in float32); BatchNorm, the
 * activations between layers, the losses, the weights and the optimiser states stay float32.
 * The dense head and the decoder's transposed convolutions (well under 1% of ResNet-50's
 * arithmetic) stay float32 too.
 *
 * tfjs has no 16-bit dtype, so each convolution is one tfjs kernel (CasmConv2DBf16, with its
 * gradients) that casts its inputs to bfloat16, runs TensorFlow's kernel by name, and casts the
 * result back, on TensorFlow handles that JavaScript never sees: a bfloat16 tensor lives only
 * inside one call below, so nothing of tfjs (its dtype checks, readers, serialisers) ever meets one.
 */
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { nativeBackend, type NativeBackend, type TfeAttr } from './native.js';

export const PRECISIONS = ['fp32', 'bf16'] as const;
export type Precision = (typeof PRECISIONS)[number];

/** TF_BFLOAT16 of tensorflow/c/tf_datatype.h; tfjs-node's binding does not name it. */
const TF_BFLOAT16 = 14;

export interface Bf16Support {
  ok: boolean;
  /** Which instructions it has, or why it has none: said in the log line or the error. */
  reason: string;
}

/**
 * Whether this CPU runs bfloat16 arithmetic in hardware (AMX-BF16 or AVX512-BF16). Without them
 * TensorFlow still runs bfloat16 kernels, by converting to float32 and back: correct, but no faster
 * than fp32 (a 3x3 convolution, 64 channels, 56 x 56, batch 16: 41.6 ms bf16 against 39.2 ms fp32
 * on an AMD EPYC of the Zen 3 generation; 25.6 against 34.9 ms on one with AVX512-BF16).
 */
export function bf16Support(cpuinfo: string | null = readCpuinfo()): Bf16Support {
  if (cpuinfo === null) return { ok: false, reason: 'cannot read /proc/cpuinfo to tell whether this CPU has AMX-BF16 or AVX512-BF16' };
  const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '').trim().split(/\s+/));
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() || 'this CPU';
  const have = ['amx_bf16', 'avx512_bf16'].filter((f) => flags.has(f));
  return have.length > 0
    ? { ok: true, reason: `${model} has ${have.join(' and ')}` }
    : { ok: false, reason: `${model} has neither AMX-BF16 nor AVX512-BF16 (no amx_bf16 or avx512_bf16 among the flags of /proc/cpuinfo)` };
}

function readCpuinfo(): string | null {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
}

/** --precision bf16 cannot run as asked: the message says why and what to do. */
export class PrecisionUnavailable extends Error {}

/** Set to 1, runs bf16 where the CPU lacks it (numerics checks): TensorFlow emulates it. */
export const EMULATION_ENV = 'CASM_BF16_EMULATION';

/**
 * The words for the engine's log line about --precision bf16 on this engine, or a
 * PrecisionUnavailable where it would be a slow emulation (unless EMULATION_ENV asks for one).
 */
export function bf16Route(device: 'cpu' | 'gpu', support: Bf16Support = bf16Support(), env: NodeJS.ProcessEnv = process.env): string {
  const what = 'convolutions and their gradients in bfloat16, the rest float32';
  // TensorFlow's GPU kernels take bfloat16 on compute capability 8.0 and later; casm-ts has not measured one.
  if (device === 'gpu') return `${what}; on the GPU build (not measured by casm-ts)`;
  if (support.ok) return `${what}; ${support.reason}`;
  if (env[EMULATION_ENV] === '1') return `${what}; EMULATED (${EMULATION_ENV}=1): ${support.reason}, so it is no faster than fp32`;
  throw new PrecisionUnavailable(
    `--precision bf16: ${support.reason}; TensorFlow would emulate bfloat16 there, no faster than fp32 (see src/engine/mixedPrecision.ts). ` +
      `Use --precision fp32, or set ${EMULATION_ENV}=1 to run bf16 anyway (numerics checks)`,
  );
}

let precision: Precision = 'fp32';

/** Which precision the convolutions of src/engine/fusedTraining.ts run in. */
export function setPrecision(p: Precision): void {
  precision = p;
}

export function convPrecision(): Precision {
  return precision;
}

/**
 * Runs TensorFlow op `op` with T = bfloat16: the inputs flagged in `cast` go in as bfloat16 casts
 * of their float32 values (the others, shapes, as they are), the output comes back as float32.
 * Every bfloat16 handle is deleted before it returns.
 */
function inBf16(b: NativeBackend, op: string, attrs: TfeAttr[], inputs: tf.Tensor[], cast: boolean[]): tf.Tensor {
  const { TF_ATTR_TYPE, TF_ATTR_BOOL, TF_FLOAT } = b.binding;
  const convert = (id: number, from: number, to: number) =>
    b.binding.executeOp(
      'Cast',
      [
        { name: 'SrcT', type: TF_ATTR_TYPE, value: from },
        { name: 'DstT', type: TF_ATTR_TYPE, value: to },
        { name: 'Truncate', type: TF_ATTR_BOOL, value: false },
      ],
      [id],
      1,
    )[0]!;
  const ids = b.getInputTensorIds(inputs);
  const halves: number[] = [];
  try {
    const args = ids.map((id, i) => {
      if (!cast[i]) return id;
      halves.push(convert(id, TF_FLOAT, TF_BFLOAT16).id);
      return halves.at(-1)!;
    });
    const out = b.binding.executeOp(op, [{ name: 'T', type: TF_ATTR_TYPE, value: TF_BFLOAT16 }, ...attrs], args, 1)[0]!;
    halves.push(out.id);
    return b.createOutputTensor(convert(out.id, TF_BFLOAT16, TF_FLOAT));
  } finally {
    for (const id of halves) b.binding.deleteTensor(id);
  }
}

interface ConvAttrs {
  strides: [number, number];
  pad: 'same' | 'valid';
  dilations: [number, number];
}

/** Conv2D's attributes (all but T) for NHWC x and HWIO filter, as tfjs-node's Conv2D kernel sets them. */
function conv2dAttrs(b: NativeBackend, xShape: number[], filterShape: number[], a: ConvAttrs): TfeAttr[] {
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    a.strides,
    a.dilations,
    a.pad,
  );
  const { TF_ATTR_INT, TF_ATTR_STRING, TF_ATTR_BOOL } = b.binding;
  return [
    { name: 'strides', type: TF_ATTR_INT, value: [1, info.strideHeight, info.strideWidth, 1] },
    { name: 'padding', type: TF_ATTR_STRING, value: info.padInfo.type },
    { name: 'data_format', type: TF_ATTR_STRING, value: 'NHWC' },
    { name: 'use_cudnn_on_gpu', type: TF_ATTR_BOOL, value: true },
    { name: 'dilations', type: TF_ATTR_INT, value: [1, info.dilationHeight, info.dilationWidth, 1] },
  ];
}

function native(): NativeBackend {
  const b = nativeBackend();
  if (b === null) throw new Error('bfloat16 convolutions need the native engine (backend tensorflow)');
  return b;
}

const CONV2D_BF16 = 'CasmConv2DBf16';

tf.registerKernel({
  kernelName: CONV2D_BF16,
  backendName: 'tensorflow',
  kernelFunc: ({ inputs, attrs }) => {
    const { x, filter } = inputs as { x: tf.Tensor; filter: tf.Tensor };
    const b = native();
    return inBf16(b, 'Conv2D', conv2dAttrs(b, x.shape, filter.shape, attrs as unknown as ConvAttrs), [x, filter], [true, true]);
  },
});

/** Each input's gradient is computed only when the backward pass asks for it (as tf.conv2d's). */
tf.registerGradient({
  kernelName: CONV2D_BF16,
  inputsToSave: ['x', 'filter'],
  gradFunc: (dy, saved, attrs) => {
    const [x, filter] = saved as [tf.Tensor, tf.Tensor];
    const b = native();
    const a = conv2dAttrs(b, x.shape, filter.shape, attrs as unknown as ConvAttrs);
    const withShape = (shape: number[], run: (sizes: tf.Tensor) => tf.Tensor) => () => {
      const sizes = tf.tensor1d(shape, 'int32');
      try {
        return run(sizes);
      } finally {
        sizes.dispose();
      }
    };
    return {
      x: withShape(x.shape, (sizes) => inBf16(b, 'Conv2DBackpropInput', a, [sizes, filter, dy as tf.Tensor], [false, true, true])),
      filter: withShape(filter.shape, (sizes) => inBf16(b, 'Conv2DBackpropFilter', a, [x, sizes, dy as tf.Tensor], [true, false, true])),
    };
  },
});

/** tf.conv2d (NHWC) with the convolution and its gradients in bfloat16, float32 in and out. */
export function conv2dBf16(x: tf.Tensor4D, filter: tf.Tensor4D, strides: [number, number], pad: 'same' | 'valid', dilations: [number, number]): tf.Tensor4D {
  const attrs: ConvAttrs = { strides, pad, dilations };
  return tf.engine().runKernel(CONV2D_BF16, { x, filter }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
}

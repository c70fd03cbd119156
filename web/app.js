// casm-ts demo page: an exported mask network (casm export) in the browser with plain TensorFlow.js.
// Query parameters: model=<url of the export directory> (default 'model/'), backend=<tfjs backend>.
// The network takes N x S x S x 3 RGB pixel values 0..255 (masker.json: input.range) and normalises them itself.
// For tests, window.casm exposes `ready` (a promise) and `last` (the latest result).
/* global tf */

const params = new URLSearchParams(location.search);
const modelBase = new URL(params.get('model') ?? 'model/', location.href);
if (!modelBase.pathname.endsWith('/')) modelBase.pathname += '/';
const statusEl = document.getElementById('status');
const canvases = Object.fromEntries(['input', 'mask', 'overlay'].map((id) => [id, document.getElementById(id)]));

function status(text, error = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', error);
}

// matplotlib's jet, as the project's display.ts defines it.
const JET = [
  [
    [0, 0],
    [0.35, 0],
    [0.66, 1],
    [0.89, 1],
    [1, 0.5],
  ],
  [
    [0, 0],
    [0.125, 0],
    [0.375, 1],
    [0.64, 1],
    [0.91, 0],
    [1, 0],
  ],
  [
    [0, 0.5],
    [0.11, 1],
    [0.34, 1],
    [0.65, 0],
    [1, 0],
  ],
];
function ramp(anchors, x) {
  for (let i = 1; i < anchors.length; i++) {
    const [x1, y1] = anchors[i];
    if (x <= x1) {
      const [x0, y0] = anchors[i - 1];
      return y0 + ((x - x0) / (x1 - x0)) * (y1 - y0);
    }
  }
  return anchors[anchors.length - 1][1];
}
const JET_LUT = new Uint8Array(256 * 3);
for (let i = 0; i < 256; i++) JET.forEach((a, c) => (JET_LUT[i * 3 + c] = Math.round(ramp(a, i / 255) * 255)));

/** Box of the largest 4-connected component of mask >= alpha * mean (the project's maskBox); [x0, y0, x1, y1], x1/y1 exclusive. */
export function maskBox(mask, h, w, alpha = 1) {
  let sum = 0;
  for (let i = 0; i < mask.length; i++) sum += mask[i];
  const threshold = (alpha * sum) / mask.length;
  const seen = new Uint8Array(mask.length);
  const stack = new Int32Array(mask.length);
  let best = null;
  let bestSize = 0;
  for (let start = 0; start < mask.length; start++) {
    if (!(mask[start] >= threshold) || seen[start]) continue;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    let size = 0,
      x0 = w,
      y0 = h,
      x1 = -1,
      y1 = -1;
    while (top > 0) {
      const p = stack[--top];
      size++;
      const y = (p / w) | 0;
      const x = p - y * w;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      for (const q of [x > 0 ? p - 1 : -1, x < w - 1 ? p + 1 : -1, y > 0 ? p - w : -1, y < h - 1 ? p + w : -1]) {
        if (q >= 0 && mask[q] >= threshold && !seen[q]) {
          seen[q] = 1;
          stack[top++] = q;
        }
      }
    }
    if (size > bestSize) {
      bestSize = size;
      best = [x0, y0, x1 + 1, y1 + 1];
    }
  }
  return best;
}

/** The sha256 of every file masker.json lists, checked as `casm mask` checks them: a corrupt export is refused. */
async function checkFiles(meta) {
  if (!meta.files) return 'files not hashed (an older export)';
  if (!globalThis.crypto?.subtle) return 'files not checked (no crypto.subtle: serve the page from localhost or https)';
  for (const [file, hash] of Object.entries(meta.files)) {
    const url = new URL(file, modelBase);
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await res.arrayBuffer()));
    if (Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('') !== hash) throw new Error(`${url}: corrupt (sha256 differs from masker.json)`);
  }
  return 'sha256 checked';
}

async function loadModel() {
  if (typeof tf === 'undefined') throw new Error('TensorFlow.js did not load (../node_modules/@tensorflow/tfjs/dist/tf.min.js)');
  if (params.get('backend')) await tf.setBackend(params.get('backend'));
  await tf.ready();
  const metaUrl = new URL('masker.json', modelBase);
  const res = await fetch(metaUrl);
  if (!res.ok) throw new Error(`${metaUrl}: HTTP ${res.status}; is ?model= the directory written by 'casm export'?`);
  const meta = await res.json();
  if (meta.format !== 'casm-ts-masker') throw new Error(`${metaUrl}: not a casm-ts-masker file`);
  if (meta.version !== 1) throw new Error(`${metaUrl}: masker format version ${meta.version}; this page reads version 1`);
  const integrity = await checkFiles(meta);
  const model = await tf.loadLayersModel(new URL('model.json', modelBase).href);
  return { model, meta, integrity };
}

function decode(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`${file.name}: cannot decode it as an image`));
    img.src = url;
  });
}

/** The image, short side scaled to the model's size and centre-cropped (like the CLI), on the input canvas; RGB bytes. */
function prepare(img, h, w) {
  const c = canvases.input;
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  const scale = Math.max(w / img.naturalWidth, h / img.naturalHeight);
  const sw = w / scale;
  const sh = h / scale;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(img, (img.naturalWidth - sw) / 2, (img.naturalHeight - sh) / 2, sw, sh, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Uint8Array(w * h * 3);
  for (let p = 0; p < w * h; p++) rgb.set(rgba.subarray(p * 4, p * 4 + 3), p * 3);
  return rgb;
}

function paint(canvas, rgb, w, h) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d');
  const data = ctx.createImageData(w, h);
  for (let p = 0; p < w * h; p++) {
    data.data.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
    data.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
}

async function run(state, file) {
  const { model, meta } = state;
  const h = meta.input.height;
  const w = meta.input.width;
  const img = await decode(file);
  const rgb = prepare(img, h, w);
  const t0 = performance.now();
  // The network takes the pixel values 0..255 (masker.json: input.range) and normalises them itself.
  const maskTensor = tf.tidy(() => model.predict(tf.tensor4d(Float32Array.from(rgb), [1, h, w, 3])));
  const mask = await maskTensor.data();
  maskTensor.dispose();
  const bad = mask.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new Error(`${modelBase.href}: the network gave a non-finite mask value (${mask[bad]}) for ${file.name}`);
  const ms = performance.now() - t0;

  const gray = new Uint8Array(w * h * 3);
  const over = new Uint8Array(w * h * 3);
  let sum = 0;
  for (let p = 0; p < w * h; p++) {
    sum += mask[p];
    const i = Math.min(255, Math.max(0, Math.floor(mask[p] * 256)));
    gray.fill(i, p * 3, p * 3 + 3);
    for (let c = 0; c < 3; c++) over[p * 3 + c] = Math.round(0.5 * rgb[p * 3 + c] + 0.5 * JET_LUT[i * 3 + c]);
  }
  const box = maskBox(mask, h, w, meta.threshold?.alpha ?? 1);
  paint(canvases.mask, gray, w, h);
  paint(canvases.overlay, over, w, h);
  if (box) {
    const ctx = canvases.overlay.getContext('2d');
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 1;
    ctx.strokeRect(box[0] + 0.5, box[1] + 0.5, box[2] - box[0] - 1, box[3] - box[1] - 1);
  }
  const area = sum / (w * h);
  const result = { file: file.name, mask: Array.from(mask), box, area, ms, backend: tf.getBackend(), size: [h, w] };
  window.casm.last = result;
  status(`${file.name}: mask area ${(100 * area).toFixed(1)}%, box ${box ? `[${box.join(', ')}]` : 'none'}, ${ms.toFixed(0)} ms on ${tf.getBackend()}`);
  return result;
}

window.casm = { last: null, error: null };
window.casm.ready = loadModel().then(
  (state) => {
    const { meta } = state;
    status(
      `model: ${modelBase.href} (casm-ts ${meta.projectVersion}, ${meta.training.thinning}/${meta.training.score}, step ${meta.source.step}, ` +
        `${meta.input.width}x${meta.input.height}, ${state.integrity}) on ${tf.getBackend()}. Pick or drop an image.`,
    );
    const handle = (file) => {
      if (!file) return;
      status(`${file.name}: running...`);
      run(state, file).catch((e) => {
        window.casm.error = e.message;
        status(e.message, true);
      });
    };
    document.getElementById('file').addEventListener('change', (e) => handle(e.target.files[0]));
    const drop = document.getElementById('drop');
    drop.addEventListener('dragover', (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      handle(e.dataTransfer.files[0]);
    });
    return { backend: tf.getBackend(), input: meta.input };
  },
  (e) => {
    window.casm.error = e.message;
    status(`cannot load the model: ${e.message}`, true);
    throw e;
  },
);

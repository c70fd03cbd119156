"""Oracle for test/explain.test.ts: the baseline explainers, computed independently with TensorFlow
(Python, eager, tf.GradientTape) and numpy.

    explain_oracle.py DIR

DIR/manifest.json (written by the test) names float32 little-endian files in DIR:
  weights:  [{name, shape, offset}] into weights_file: the small CNN's weights, tfjs names
            (conv_a/kernel, bn_a/gamma, ...), kernels HWIO as in TensorFlow
  input:    {file, shape}  x, NHWC, already normalised
  targets:  one class per image
  noise:    {file, shape}  SmoothGrad's noise samples [n, N, H, W, C], used as given
  cam_layers: Grad-CAM layers (names of the activations in forward() below)

The CNN is written out with tf.nn ops (the same architecture the test builds with tfjs layers):
conv_a (3x3, stride 2, SAME) -> bn_a (inference) -> relu_a -> conv_b (3x3) -> relu_b;
skip = relu_b + relu_a; pool (2x2 max) -> conv_c (3x3, stride 2) -> relu_c -> mean over space -> fc.

Writes DIR/<name>.f32 for every result and prints {name: shape} as JSON on stdout, plus "argmax".
Display maps follow PAIR-code/saliency's VisualizeImageGrayscale (gradients) and min-max scaling (CAMs).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BN_EPS = 1e-3


def load(d, spec):
    return np.fromfile(os.path.join(d, spec["file"]), dtype="<f4").reshape(spec["shape"])


def forward(x, w):
    t = {}

    def conv(v, name, stride):
        return tf.nn.conv2d(v, w[name + "/kernel"], stride, "SAME") + w[name + "/bias"]

    t["conv_a"] = conv(x, "conv_a", 2)
    t["bn_a"] = tf.nn.batch_normalization(
        t["conv_a"], w["bn_a/moving_mean"], w["bn_a/moving_variance"], w["bn_a/beta"], w["bn_a/gamma"], BN_EPS
    )
    t["relu_a"] = tf.nn.relu(t["bn_a"])
    t["conv_b"] = conv(t["relu_a"], "conv_b", 1)
    t["relu_b"] = tf.nn.relu(t["conv_b"])
    t["skip"] = t["relu_b"] + t["relu_a"]
    t["pool"] = tf.nn.max_pool2d(t["skip"], 2, 2, "VALID")
    t["conv_c"] = conv(t["pool"], "conv_c", 2)
    t["relu_c"] = tf.nn.relu(t["conv_c"])
    logits = tf.matmul(tf.reduce_mean(t["relu_c"], axis=[1, 2]), w["fc/kernel"]) + w["fc/bias"]
    return logits, t


def target_score(logits, targets):
    return tf.reduce_sum(tf.gather(logits, targets, axis=1, batch_dims=1))


def input_gradient(x, w, targets):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits, _ = forward(x, w)
        score = target_score(logits, targets)
    return tape.gradient(score, x).numpy()


def grad_cam(x, w, targets, layer, negate=False):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)  # so the ops after the layer are recorded
        logits, t = forward(x, w)
        score = target_score(logits, targets)
    a = t[layer]
    g = tape.gradient(score, a)
    if negate:
        g = -g
    alpha = tf.reduce_mean(g, axis=[1, 2])  # N x K
    cam = tf.nn.relu(tf.reduce_sum(a * alpha[:, None, None, :], axis=3, keepdims=True))
    cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")  # half-pixel centres, no antialias
    return a.numpy(), g.numpy(), alpha.numpy(), cam.numpy()


def visualize_grayscale(image_3d, percentile=99):
    """PAIR-code/saliency VisualizeImageGrayscale."""
    image_2d = np.sum(np.abs(image_3d), axis=2)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)


def gradient_maps(raw):
    return np.stack([visualize_grayscale(r) for r in raw])


def cam_maps(cam):
    c = cam[..., 0]
    lo = c.min(axis=(1, 2), keepdims=True)
    hi = c.max(axis=(1, 2), keepdims=True)
    # A CAM that ReLU zeroed everywhere scales to 0 (pytorch-grad-cam's scale_cam_image does too).
    return np.divide(c - lo, hi - lo, out=np.zeros_like(c), where=hi > lo)


def main():
    d = sys.argv[1]
    m = json.load(open(os.path.join(d, "manifest.json")))
    flat = np.fromfile(os.path.join(d, m["weights_file"]), dtype="<f4")
    w = {}
    for e in m["weights"]:
        n = int(np.prod(e["shape"]))
        w[e["name"]] = tf.constant(flat[e["offset"] : e["offset"] + n].reshape(e["shape"]))
    x = load(d, m["input"])
    targets = np.array(m["targets"], dtype=np.int32)
    noise = load(d, m["noise"])
    out = {}

    def put(name, arr):
        arr = np.asarray(arr, dtype="<f4")
        arr.tofile(os.path.join(d, name + ".f32"))
        out[name] = list(arr.shape)

    logits, _ = forward(tf.constant(x), w)
    put("logits", logits)
    argmax = np.argmax(logits.numpy(), axis=1).astype(np.int32)

    for label, t in (("given", targets), ("argmax", argmax)):
        g = input_gradient(x, w, t)
        put(f"vanilla_{label}", g)
        put(f"vanilla_{label}_map", gradient_maps(g))
    gxi = input_gradient(x, w, targets) * x
    put("gxi", gxi)
    put("gxi_map", gradient_maps(gxi))

    for layer in m["cam_layers"]:
        a, g, alpha, cam = grad_cam(x, w, targets, layer)
        put(f"cam_{layer}_activations", a)
        put(f"cam_{layer}_gradients", g)
        put(f"cam_{layer}_alpha", alpha)
        put(f"cam_{layer}", cam)
        put(f"cam_{layer}_map", cam_maps(cam))
        *_, cf = grad_cam(x, w, targets, layer, negate=True)
        put(f"cf_{layer}", cf)
        put(f"cf_{layer}_map", cam_maps(cf))

    # SmoothGrad with the test's own noise samples.
    grads = np.stack([input_gradient(x + e, w, targets) for e in noise])
    put("sg_mean", grads.mean(0))
    put("sg_mean_map", gradient_maps(grads.mean(0)))
    put("sg_square", (grads**2).mean(0))
    put("sg_square_map", gradient_maps((grads**2).mean(0)))
    put("sg_abs", np.abs(grads).mean(0))
    put("sg_times_input", grads.mean(0) * x)
    layer = m["cam_layers"][0]
    cams = np.stack([grad_cam(x + e, w, targets, layer)[3] for e in noise])
    put("sg_cam", cams.mean(0))
    put("sg_cam_map", cam_maps(cams.mean(0)))

    print(json.dumps({"outputs": out, "argmax": argmax.tolist(), "tensorflow": tf.__version__}))


if __name__ == "__main__":
    main()

"""Oracle for test/resnetOracle.test.ts and test/weights.test.ts: torchvision's own ResNet.

Subcommands (all output is JSON on stdout; data goes to files):

  probe
      Versions of python/torch/torchvision/numpy/safetensors importable here; exit 1 if torch or
      torchvision cannot be imported.

  make OUTDIR [--depths 3,4,6,3] [--classes 1000] [--size 224] [--batch 2] [--seed 0]
      Builds torchvision.models.resnet.ResNet(Bottleneck, depths, num_classes) (for 3,4,6,3 and 1000
      classes: torchvision.models.resnet50(weights=None)) with a fixed seed, randomises every
      BatchNorm (gamma, beta, then running statistics calibrated on a separate random batch and
      perturbed, so BN is far from identity yet activations stay O(1)), switches to eval mode and
      writes to OUTDIR:
        weights.safetensors      the state dict (int64 num_batches_tracked included)
        input.f32                the input batch, NHWC float32 little-endian
        <name>.f32               pool (after maxpool), stage1..stage4 (NHWC) and logits [N, classes]
        manifest.json            shapes, parameter/buffer counts, versions, and how far torch's
                                 own float32 forward is from its float64 forward (scale of the
                                 float32 rounding noise, for judging tolerances)

  st-write OUTFILE           (needs numpy + safetensors only; used with the project .venv)
      Writes a safetensors file with the reference library: F32, F64, F16, I64, I32 tensors and
      metadata; prints their values as JSON.
  st-read INFILE
      Reads a safetensors file with the reference library; prints names, dtypes, shapes, values,
      metadata as JSON (values as float lists).

Works with Debian's python3-torch 1.13 / python3-torchvision 0.14 (/usr/bin/python3, no safetensors
package: the state dict is then written by the small writer below) and with the pip pair torch
2.13.0+cpu / torchvision 0.28.0 (whose wheel is a CUDA build: its C++ ops cannot load against CPU
torch, which this script tolerates, see import_torchvision()).
"""
import argparse
import json
import os
import struct
import sys


def import_torchvision():
    """Imports torchvision; if its C++ extension cannot load (a CUDA torchvision wheel on a CPU
    torch), torchvision >= 0.18 fails at import in _meta_registrations, which registers fake
    kernels for torchvision::nms / qnms unconditionally. The models need none of the C++ ops, so
    declare those two schemas and import again."""
    import torch

    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive below)
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision._lib = lib
    import torchvision

    return torchvision


def probe():
    info = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
    try:
        import safetensors

        info["safetensors"] = getattr(safetensors, "__version__", "?")
    except ImportError:
        info["safetensors"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torchvision"] = import_torchvision().__version__
    except Exception as err:  # noqa: BLE001 (report whatever broke)
        info["error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(info))
        sys.exit(1)
    print(json.dumps(info))


# ------------------------------------------------------------------ safetensors without the package

_ST_DTYPES = {"float32": ("F32", 4), "float64": ("F64", 8), "float16": ("F16", 2), "int64": ("I64", 8), "int32": ("I32", 4)}


def save_safetensors(tensors, path):
    """safetensors.torch.save_file when available, else the same format written here."""
    try:
        from safetensors.torch import save_file

        save_file(tensors, path)
        return "safetensors " + __import__("safetensors").__version__
    except ImportError:
        pass
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        arr = t.detach().cpu().contiguous().numpy()
        dtype, _ = _ST_DTYPES[str(arr.dtype)]
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    return "test/helpers/torchvision_resnet.py writer"


# ------------------------------------------------------------------ the oracle


def make(args):
    import numpy as np
    import torch

    torchvision = import_torchvision()
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.set_grad_enabled(False)
    depths = [int(d) for d in args.depths.split(",")]
    torch.manual_seed(args.seed)
    if depths == [3, 4, 6, 3] and args.classes == 1000:
        m = torchvision.models.resnet50(weights=None)
        builder = "torchvision.models.resnet50(weights=None)"
    else:
        m = ResNet(Bottleneck, depths, num_classes=args.classes)
        builder = f"torchvision.models.resnet.ResNet(Bottleneck, {depths}, num_classes={args.classes})"

    # BatchNorm far from identity: random affine, then running stats calibrated on a random batch
    # (cumulative average, momentum=None) and perturbed.
    g = torch.Generator().manual_seed(args.seed + 1)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
        bn.reset_running_stats()
        bn.momentum = None
    m.train()
    m(torch.randn(4, 3, args.size, args.size, generator=g))
    for bn in bns:
        bn.momentum = 0.1
        std = bn.running_var.sqrt()
        bn.running_mean.add_(torch.randn(bn.num_features, generator=g) * 0.2 * std)
        bn.running_var.mul_(torch.rand(bn.num_features, generator=g) * 1.5 + 0.5)
    m.eval()

    os.makedirs(args.out, exist_ok=True)
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    writer = save_safetensors(state, os.path.join(args.out, "weights.safetensors"))

    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    feats = {}
    names = {"pool": m.maxpool, "stage1": m.layer1, "stage2": m.layer2, "stage3": m.layer3, "stage4": m.layer4}
    hooks = [mod.register_forward_hook(lambda _m, _i, out, n=n: feats.__setitem__(n, out)) for n, mod in names.items()]
    logits = m(x)
    for h in hooks:
        h.remove()
    # Reference in float64, only to measure torch's own float32 rounding noise.
    m64 = m.double()
    logits64 = m64(x.double())
    f32_vs_f64 = float((logits.double() - logits64).abs().max() / logits64.abs().max())

    outputs = {}

    def dump(name, t):
        arr = t.detach().float().numpy()
        if arr.ndim == 4:
            arr = arr.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        arr = np.ascontiguousarray(arr, dtype="<f4")
        arr.tofile(os.path.join(args.out, name + ".f32"))
        outputs[name] = {"file": name + ".f32", "shape": list(arr.shape), "max_abs": float(np.abs(arr).max())}

    dump("input", x)
    for n in names:
        dump(n, feats[n])
    dump("logits", logits)

    manifest = {
        "builder": builder,
        "depths": depths,
        "classes": args.classes,
        "size": args.size,
        "batch": args.batch,
        "seed": args.seed,
        "params": sum(p.numel() for p in m.parameters()),
        "trainable_params": sum(p.numel() for p in m.parameters() if p.requires_grad),
        "buffers": {k: list(v.shape) for k, v in m.named_buffers()},
        "state_dict_keys": len(state),
        "weights_writer": writer,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": sys.version.split()[0],
        "torch_f32_vs_f64_logits_rel": f32_vs_f64,
        "outputs": outputs,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps({k: manifest[k] for k in ("builder", "params", "torch", "torchvision", "torch_f32_vs_f64_logits_rel")}))


# ------------------------------------------------------------------ safetensors interop (no torch)


def st_write(path):
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {
        "a.f32": np.arange(-3, 3, dtype=np.float32).reshape(2, 3) / np.float32(4),
        "b.f64": np.array([[1.0 / 3.0], [-2.5e-7]], dtype=np.float64),
        "c.f16": np.array([0.5, -1.25, 65504.0, 6.1035156e-05, 5.9604645e-08, 0.0], dtype=np.float16),
        "d.i64": np.array(123456, dtype=np.int64),
        "e.i32": np.array([[-7, 0, 2147483647]], dtype=np.int32),
        "f.empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, path, metadata={"format": "pt", "note": "written by safetensors.numpy"})
    out = {k: {"shape": list(v.shape), "values": [float(x) for x in v.astype(np.float64).ravel()]} for k, v in tensors.items()}
    print(json.dumps(out))


def st_read(path):
    from safetensors import safe_open

    out = {"tensors": {}, "metadata": None}
    with safe_open(path, framework="numpy") as f:
        out["metadata"] = f.metadata()
        for k in f.keys():
            arr = f.get_tensor(k)
            out["tensors"][k] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "values": [float(x) for x in arr.ravel()]}
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe")
    mk = sub.add_parser("make")
    mk.add_argument("out")
    mk.add_argument("--depths", default="3,4,6,3")
    mk.add_argument("--classes", type=int, default=1000)
    mk.add_argument("--size", type=int, default=224)
    mk.add_argument("--batch", type=int, default=2)
    mk.add_argument("--seed", type=int, default=0)
    w = sub.add_parser("st-write")
    w.add_argument("path")
    r = sub.add_parser("st-read")
    r.add_argument("path")
    args = p.parse_args()
    if args.cmd == "probe":
        probe()
    elif args.cmd == "make":
        make(args)
    elif args.cmd == "st-write":
        st_write(args.path)
    else:
        st_read(args.path)


if __name__ == "__main__":
    main()

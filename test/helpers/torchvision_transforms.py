"""Oracle for the training augmentation of src/data/decode.ts: torchvision's own ColorJitter
functions (transforms.functional adjust_brightness, adjust_contrast, adjust_saturation, in that
order, on a float image in [0, 1]).

    torchvision_transforms.py probe
        Versions of python/torch/torchvision as JSON; exit 1 if they cannot be imported.
    torchvision_transforms.py jitter IN OUT H W BRIGHTNESS CONTRAST SATURATION
        IN: HWC uint8 RGB bytes; writes OUT: the jittered image, HWC float32 in [0, 255] (not
        rounded, so the caller sees how far its own rounding is).
"""
import json
import sys


def probe():
    import torch
    import torchvision

    print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__}))


def jitter(src, out, h, w, b, c, s):
    import numpy as np
    import torch
    import torchvision.transforms.functional as F

    x = np.fromfile(src, dtype=np.uint8).reshape(int(h), int(w), 3)
    t = torch.from_numpy(x.astype(np.float64) / 255.0).permute(2, 0, 1)
    t = F.adjust_brightness(t, float(b))
    t = F.adjust_contrast(t, float(c))
    t = F.adjust_saturation(t, float(s))
    (t.permute(1, 2, 0).numpy() * 255.0).astype(np.float32).tofile(out)


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe()
    elif sys.argv[1] == "jitter":
        jitter(*sys.argv[2:9])
    else:
        sys.exit(f"unknown subcommand {sys.argv[1]}")

#!/usr/bin/env python3
"""PyTorch reference for `npm run bench` (issue 7): one CASM iteration (spec section 2, thinning L100,
entropy score, joint eq. 8 classifier step) written independently in PyTorch, timed next to our
TensorFlow.js engine. Also times the plain classifier training step and the masker forward.
Install: bash scripts/setup-bench.sh (torch 2.13.0+cpu + torchvision 0.28.0 in .venv-bench).

  .venv-bench/bin/python bench/reference/casm_iteration.py [--batch 16 --size 224 --steps 3
      --warmup 1 --depths 3,4,6,3 --width 64 --classes 1000 --threads N --json]
  .venv-bench/bin/python bench/reference/casm_iteration.py --check    # small correctness self-check
  .venv-bench/bin/python bench/reference/casm_iteration.py --probe    # versions, as JSON

Each mode (plain, masker_forward, casm) runs in a fresh subprocess by default, so each peak RSS
(getrusage ru_maxrss) is that mode's alone: model, optimiser state, autograd graph, allocator.
--no-isolate runs them in this process (then peak RSS is cumulative over the modes run so far).

What one CASM iteration does here, pass by pass (mirrors CasmTrainer.iteration in
src/casm/trainer.ts with classifierStep 'joint', trainNoise 0, the trainer's defaults):
  1. f_k forward on x, training mode (BN batch statistics, running stats updated): 5 feature
     maps + clean logits, recorded for backward. Decoder forward on the detached features,
     training mode, no grad (its BN running stats updated once here): masks m.
  2. f_k forward on (1 - m) * x, training mode, recorded. L_f = (CE(clean) + CE(masked)) / 2;
     one backward through both forwards (weight gradients of f_k); SGD momentum 0.9, lr 1e-3,
     weight decay 1e-4 (L2 added to the gradient).
  3. Pool (L100): at iteration t % 100 == 0 the whole state dict is copied into the pool (at most
     30 entries, a random one replaced when full). With warm-up >= 1 that copy happens in the
     first (untimed) warm-up iteration, so timed iterations run with one snapshot present.
  4. Decoder forward again on the same detached features, recorded (training mode, BN running
     stats saved before and restored after: batch statistics, no second stats update). Scorer f':
     the current f_k after its update (training mode, its BN running stats updated, as ours) or the
     snapshot (a second ResNet in eval mode, weights loaded when the chosen snapshot changes).
     L_m = mean(c_b * -H(p_b)) + lambda * mean(g_b * mean(m_b)); gradient w.r.t. the decoder's
     parameters only (torch.autograd.grad: the backward goes through f' down to its input but
     computes no classifier weight gradients); global-norm clip 10; Adam lr 1e-3, wd 1e-4.
  Choice of f': --choice alternate (default, deterministic): iteration t (counted from 0 over
  warm-up and timed calls) is scored by the current classifier when t is even, by the snapshot
  when t is odd. --choice random: probability 1/2 each, as the L100 rule (seeded).

Busy machines: torch's CPU wheel runs its thread pool on libgomp, whose threads spin-wait at every
barrier. When other processes share the cores, a descheduled thread stalls each parallel region for
a scheduler slice: with --threads 2 on a 2-core machine under load, a small model's step was ~100x
slower than with --threads 1 (measured here). Take figures on an idle machine; the JSON records the
1-minute load average around the timed calls and CPU time per iteration, to spot contamination.
OMP_WAIT_POLICY=PASSIVE (environment) softens it; it is recorded under environment.omp_env.
"""
import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time

MODES = ("plain", "masker_forward", "casm")
LABELS = {
    "plain": "plain classifier step (SGD on clean CE)",
    "masker_forward": "masker forward (features + decoder, eval mode, no grad)",
    "casm": "CASM iteration (eq. 8 classifier step + L100 pool + masker step)",
}
CHECK_CONFIG = {"depths": [1, 1, 1, 1], "width": 8, "size": 64, "batch": 4, "classes": 10}


# ------------------------------------------------------------------ imports


def import_torchvision():
    """torchvision, tolerating a CUDA torchvision wheel on CPU torch (as test/helpers/torchvision_resnet.py):
    torchvision >= 0.18 registers fake kernels for torchvision::nms / qnms at import, which fails when
    its C++ extension cannot load. The models need no C++ op: declare the two schemas, import again."""
    import torch

    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision._lib = lib  # keep the library alive
    import torchvision

    return torchvision


def environment(threads=None):
    import torch

    tv = import_torchvision()
    return {
        "engine": "pytorch",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": tv.__version__,
        "threads": torch.get_num_threads() if threads is None else threads,
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_"))},
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def probe():
    info = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        info.update(environment())
    except Exception as err:  # noqa: BLE001 (report whatever broke)
        info["error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(info))
        sys.exit(1)
    print(json.dumps(info))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------------ models


def build_resnet(depths, width, classes):
    """torchvision's ResNet-50 for the defaults; for small variants torchvision's own Bottleneck and
    _make_layer with the stem width as a parameter (stage k: width * 2^k planes, 4x that out), the
    same scaling as src/models/resnet.ts."""
    from torch import nn

    tv = import_torchvision()
    from torchvision.models.resnet import Bottleneck, ResNet

    if list(depths) == [3, 4, 6, 3] and width == 64 and classes == 1000:
        return tv.models.resnet50(weights=None), "torchvision.models.resnet50(weights=None)"
    if width == 64:
        return ResNet(Bottleneck, list(depths), num_classes=classes), f"torchvision ResNet(Bottleneck, {list(depths)}, {classes})"

    class WidthResNet(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(Bottleneck, width, depths[0])
            self.layer2 = self._make_layer(Bottleneck, width * 2, depths[1], stride=2)
            self.layer3 = self._make_layer(Bottleneck, width * 4, depths[2], stride=2)
            self.layer4 = self._make_layer(Bottleneck, width * 8, depths[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * Bottleneck.expansion, classes)
            for m in self.modules():  # torchvision's init
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    return WidthResNet(), f"torchvision Bottleneck ResNet {list(depths)} width {width} classes {classes}"


def trunk(model, x):
    """The five feature maps (after the stem max-pool, after layer1..4) and the logits, one pass."""
    import torch

    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    f1 = model.layer1(h)
    f2 = model.layer2(f1)
    f3 = model.layer3(f2)
    f4 = model.layer4(f3)
    logits = model.fc(torch.flatten(model.avgpool(f4), 1))
    return [h, f1, f2, f3, f4], logits


def make_decoder(channels, decoder_width=64):
    """Spec section 1: pool features unchanged; stage k: 1x1 conv (no bias) -> BN -> ReLU -> bilinear
    x 2^(k-1) to H/4; concat -> 3x3 conv (bias) -> sigmoid -> nearest x4 to H x W."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, decoder_width, 1, bias=False), nn.BatchNorm2d(decoder_width, eps=1e-5, momentum=0.1), nn.ReLU())
                for c in channels[1:]
            )
            self.out = nn.Conv2d(channels[0] + 4 * decoder_width, 1, 3, padding=1, bias=True)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.out.bias)

        def forward(self, feats):
            branches = [feats[0]]
            for k, (f, proj) in enumerate(zip(feats[1:], self.proj)):
                y = proj(f)
                if k > 0:
                    y = F.interpolate(y, scale_factor=2**k, mode="bilinear", align_corners=False)
                branches.append(y)
            m = torch.sigmoid(self.out(torch.cat(branches, 1)))
            return F.interpolate(m, scale_factor=4, mode="nearest")

    return Decoder()


def feature_channels(depths, width):
    return [width] + [width * 2**k * 4 for k in range(4)]


def default_lambda(classes):
    """L100 / entropy preset 10, scaled by log(K) / log(1000) as src/casm/score.ts defaultLambda."""
    return 10.0 * math.log(classes) / math.log(1000)


# ------------------------------------------------------------------ CASM


def masker_loss(masked_logits, labels, clean_correct, masks, lam, score="entropy"):
    """L_m = mean_b[c_b * -S_b] + lambda * mean_b[g_b * mean(m_b)], g_b = c_b * [masked wrong]."""
    import torch.nn.functional as F

    logp = F.log_softmax(masked_logits, 1)
    entropy = -(logp.exp() * logp).sum(1)
    s = entropy if score == "entropy" else -logp.gather(1, labels[:, None])[:, 0]
    masked_correct = (masked_logits.detach().argmax(1) == labels).float()
    gate = clean_correct * (1 - masked_correct)
    area = masks.mean((1, 2, 3))
    gated_area = lam * (gate * area).mean()
    loss = (clean_correct * -s).mean() + gated_area
    return loss, {"entropy": entropy.mean(), "area": area, "gate": gate, "gated_area": gated_area.detach(), "masked_correct": masked_correct}


class Pool:
    """L100: a snapshot every `every` iterations, at most `max_size`, a random one replaced when full;
    f' is the current classifier with probability 1/2, else a uniformly random snapshot."""

    def __init__(self, choice="alternate", every=100, max_size=30, seed=0):
        self.snapshots = []
        self.choice, self.every, self.max_size = choice, every, max_size
        self.rng = random.Random(seed)

    def choose(self, t):
        pick = (t % 2 == 1) if self.choice == "alternate" else self.rng.random() >= 0.5
        if not pick or not self.snapshots:
            return ("current", None)
        return ("snapshot", self.rng.randrange(len(self.snapshots)))

    def update(self, t, model):
        if t % self.every:
            return
        snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if len(self.snapshots) < self.max_size:
            self.snapshots.append(snap)
        else:
            self.snapshots[self.rng.randrange(len(self.snapshots))] = snap


class Casm:
    def __init__(self, depths, width, classes, lam, choice="alternate", seed=0, channels_last=False):
        import torch

        torch.manual_seed(seed)
        self.depths, self.width, self.classes, self.lam = depths, width, classes, lam
        self.clf, self.builder = build_resnet(depths, width, classes)
        self.dec = make_decoder(feature_channels(depths, width))
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.clf.to(memory_format=self.fmt)
        self.dec.to(memory_format=self.fmt)
        self.clf_opt = torch.optim.SGD(self.clf.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.dec_params = [p for p in self.dec.parameters() if p.requires_grad]
        self.dec_opt = torch.optim.Adam(self.dec_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
        self.pool = Pool(choice, seed=seed)
        self.snapshot_model = None
        self.loaded_snapshot = None
        self.t = 0

    def classifier_phase(self, x, y):
        """Steps 1-2: features, masks (no grad), eq. 8 joint SGD step. Returns what step 4 needs."""
        import torch
        import torch.nn.functional as F

        self.clf.train()
        self.dec.train()
        feats, clean_logits = trunk(self.clf, x)
        feats = [f.detach() for f in feats]  # stop-gradient: the masker never trains the encoder
        with torch.no_grad():
            masks = self.dec(feats)
        masked_logits = self.clf((1 - masks) * x)
        loss = 0.5 * (F.cross_entropy(clean_logits, y) + F.cross_entropy(masked_logits, y))
        self.clf_opt.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"classifier loss is {value}")
        self.clf_opt.step()
        clean_correct = (clean_logits.detach().argmax(1) == y).float()
        return feats, clean_correct, value, masks

    def scorer(self, choice):
        kind, index = choice
        if kind == "current":
            self.clf.train()
            return self.clf
        if self.snapshot_model is None:
            self.snapshot_model, _ = build_resnet(self.depths, self.width, self.classes)
            self.snapshot_model.to(memory_format=self.fmt).eval().requires_grad_(False)
        snap = self.pool.snapshots[index]
        if self.loaded_snapshot is not snap:
            self.snapshot_model.load_state_dict(snap)
            self.loaded_snapshot = snap
        return self.snapshot_model

    def masker_phase(self, x, y, feats, clean_correct, choice):
        """Step 4: decoder forward under autograd (BN stats frozen), f' on the masked-out image,
        gradient w.r.t. the decoder only, clip 10, Adam."""
        import torch

        scorer = self.scorer(choice)
        self.dec.train()
        bufs = [b for b in self.dec.buffers()]
        saved = [b.clone() for b in bufs]
        masks = self.dec(feats)
        masked_logits = scorer((1 - masks) * x)
        loss, parts = masker_loss(masked_logits, y, clean_correct, masks, self.lam)
        grads = torch.autograd.grad(loss, self.dec_params)
        with torch.no_grad():  # after the backward (BN's backward reads its saved running stats), as ours
            for b, s in zip(bufs, saved):
                b.copy_(s)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"masker loss is {value}")
        for p, g in zip(self.dec_params, grads):
            p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(self.dec_params, 10.0)
        self.dec_opt.step()
        return value, parts, masks, float(norm)

    def iteration(self, x, y):
        import torch

        choice = self.pool.choose(self.t)
        feats, clean_correct, cls_loss, _ = self.classifier_phase(x, y)
        self.pool.update(self.t, self.clf)
        m_loss, parts, masks, norm = self.masker_phase(x, y, feats, clean_correct, choice)
        area = parts["area"].detach()
        stats = torch.stack([clean_correct.mean(), parts["masked_correct"].mean(), parts["entropy"].detach(), area.mean(), area.std(unbiased=False), parts["gate"].mean()]).tolist()
        self.t += 1
        return {
            "classifier_loss": cls_loss,
            "masker_loss": m_loss,
            "acc_clean": stats[0],
            "acc_masked": stats[1],
            "entropy": stats[2],
            "area_mean": stats[3],
            "area_std": stats[4],
            "gated": stats[5],
            "gated_area_term": float(parts["gated_area"]),
            "masker_grad_norm": norm,
            "scored_by": choice[0],
        }


# ------------------------------------------------------------------ timing


def run_mode(mode, args):
    """Times one mode in this process; returns its result (img/s, ms, RSS)."""
    import torch
    import torch.nn.functional as F

    depths = [int(d) for d in args.depths.split(",")]
    lam = args.lam if args.lam is not None else default_lambda(args.classes)
    casm = Casm(depths, args.width, args.classes, lam, args.choice, args.seed, args.channels_last)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).contiguous(memory_format=casm.fmt)
    y = torch.randint(0, args.classes, (args.batch,), generator=torch.Generator().manual_seed(2))
    info = {}
    if mode == "plain":
        sgd = torch.optim.SGD(casm.clf.parameters(), lr=1e-3, momentum=0.9)  # as bench.ts: no weight decay
        casm.clf.train()

        def step():
            sgd.zero_grad(set_to_none=True)
            F.cross_entropy(casm.clf(x), y).backward()
            sgd.step()

    elif mode == "masker_forward":
        casm.clf.eval()
        casm.dec.eval()

        def step():
            with torch.no_grad():
                feats, _logits = trunk(casm.clf, x)
                casm.dec(feats)

    else:
        scored = info.setdefault("scored_by", [])

        def step():
            scored.append(casm.iteration(x, y)["scored_by"])

    if args.autocast == "bf16":
        # Forward and backward alike run under autocast: a backward op runs in the dtype autocast
        # chose for its forward op either way (PyTorch's autocast notes).
        plain_step = step

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain_step()

    rss_setup = current_rss_mb()
    for _ in range(args.warmup):
        step()
    load_before = os.getloadavg()[0]
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ms = 1000.0 * sum(times) / len(times)
    if mode == "casm":
        info["scored_by_timed"] = info["scored_by"][args.warmup:]
        info["snapshots"] = len(casm.pool.snapshots)
    return {
        "label": LABELS[mode],
        "img_per_s": 1000.0 * args.batch / ms,
        "ms_per_iteration": ms,
        "ms_per_step": [1000.0 * t for t in times],
        # Contamination signs: CPU time (all threads) far below threads x wall time, or a 1-minute
        # load average above the thread count, mean other processes shared the cores.
        "cpu_ms_per_iteration": 1000.0 * sum(cpu) / len(cpu),
        "loadavg_1min_before_timed": load_before,
        "loadavg_1min_after_timed": os.getloadavg()[0],
        "rss_after_setup_mb": rss_setup,
        "peak_rss_mb": peak_rss_mb(),
        "builder": casm.builder,
        **info,
    }


def child_argv(mode, args):
    return [
        sys.executable, os.path.abspath(__file__), "--mode", mode, "--json", "--no-isolate",
        "--batch", str(args.batch), "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--depths", args.depths, "--width", str(args.width), "--classes", str(args.classes), "--threads", str(args.threads),
        "--choice", args.choice, "--seed", str(args.seed),
        *(["--interop-threads", str(args.interop_threads)] if args.interop_threads else []),
        *(["--lambda", str(args.lam)] if args.lam is not None else []),
        *(["--channels-last"] if args.channels_last else []),
        "--autocast", args.autocast,
    ]


def bench(args):
    modes = MODES if args.mode == "all" else (args.mode,)
    out = {
        "config": {
            "batch": args.batch, "size": args.size, "steps": args.steps, "warmup": args.warmup,
            "depths": [int(d) for d in args.depths.split(",")], "width": args.width, "classes": args.classes,
            "lambda": args.lam if args.lam is not None else default_lambda(args.classes), "thinning": "L100",
            "score": "entropy", "classifier_step": "joint", "choice": args.choice,
            "memory_format": "channels_last" if args.channels_last else "contiguous (NCHW)",
            "autocast": args.autocast,
            "isolated": not args.no_isolate,
        },
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "results": {},
    }
    if args.no_isolate:
        setup_threads(args)
        out["environment"] = environment(args.threads)
    for mode in modes:
        if args.no_isolate:
            out["results"][mode] = run_mode(mode, args)
        else:
            proc = subprocess.run(child_argv(mode, args), stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                sys.exit(f"casm_iteration.py: mode {mode} failed (exit {proc.returncode})")
            child = json.loads(proc.stdout)
            out.setdefault("environment", child["environment"])
            out["results"][mode] = child["results"][mode]
        if not args.json:
            if mode == modes[0]:
                print(header(out, args), flush=True)
            report_line(mode, out["results"][mode])
    if args.json:
        print(json.dumps(out))


def header(out, args):
    env, cfg = out["environment"], out["config"]
    return (
        f"pytorch reference: torch {env['torch']} (torchvision {env['torchvision']}), {env['threads']} threads "
        f"(interop {env['interop_threads']}), MKLDNN {'on' if env['mkldnn_enabled'] and env['mkldnn_available'] else 'off'} "
        f"({env['cpu_capability']}), {cfg['memory_format']}; {next(iter(out['results'].values()))['builder']} at "
        f"{args.size}px, batch {args.batch}, {args.warmup} warm-up + {args.steps} timed calls each, "
        f"{'one subprocess per mode' if cfg['isolated'] else 'one process (peak RSS cumulative)'}"
    )


def report_line(mode, r):
    extra = f"; f' per timed step: {','.join(r['scored_by_timed'])}" if mode == "casm" else ""
    print(
        f"{r['label']}: {r['img_per_s']:.3f} img/s ({r['ms_per_iteration']:.0f} ms/iteration, CPU {r['cpu_ms_per_iteration']:.0f} ms, "
        f"load {r['loadavg_1min_before_timed']:.1f}->{r['loadavg_1min_after_timed']:.1f}), peak RSS {r['peak_rss_mb']:.0f} MB{extra}",
        flush=True,
    )


def setup_threads(args):
    import torch

    torch.set_num_threads(args.threads)
    if args.interop_threads:
        torch.set_num_interop_threads(args.interop_threads)


# ------------------------------------------------------------------ self-check


def check(args):
    """One small iteration per scorer kind, with assertions; exits 1 on the first failure."""
    import torch

    setup_threads(args)
    cfg = CHECK_CONFIG
    results = []

    def ok(cond, what):
        results.append((bool(cond), what))
        print(f"  {'ok  ' if cond else 'FAIL'} {what}", flush=True)
        if not cond:
            sys.exit(1)

    lam = default_lambda(cfg["classes"])
    casm = Casm(cfg["depths"], cfg["width"], cfg["classes"], lam, "alternate", seed=args.seed)
    g = torch.Generator().manual_seed(1)
    B, S = cfg["batch"], cfg["size"]
    x = torch.randn(B, 3, S, S, generator=g)
    print(f"check: {casm.builder}, {S}px, batch {B}, lambda {lam:.3f}")

    def clean_prediction():
        """argmax of f_k's training-mode logits on x, BN running stats left untouched."""
        bufs = list(casm.clf.buffers())
        saved = [b.clone() for b in bufs]
        with torch.no_grad():
            pred = trunk(casm.clf, x)[1].argmax(1)
            for b, s in zip(bufs, saved):
                b.copy_(s)
        return pred

    def params(m):
        return [p.detach().clone() for p in m.parameters()]

    def changed(before, m):
        return all(not torch.equal(a, p) for a, p in zip(before, m.parameters()))

    # -- iteration 0: scored by the current classifier; all labels wrong for f_k on the clean batch.
    y_wrong = (clean_prediction() + 1) % cfg["classes"]
    clf0, dec0 = params(casm.clf), params(casm.dec)
    dec_bn_before = [b.clone() for n, b in casm.dec.named_buffers() if n.endswith("num_batches_tracked")]
    clf_bn0 = int(casm.clf.bn1.num_batches_tracked)
    choice = casm.pool.choose(casm.t)
    feats, clean_correct, cls_loss, masks = casm.classifier_phase(x, y_wrong)
    ok(choice[0] == "current", "iteration 0 is scored by the current classifier (alternate, pool empty)")
    ok(math.isfinite(cls_loss), f"classifier loss finite ({cls_loss:.4f})")
    ok(tuple(masks.shape) == (B, 1, S, S), f"masks shape [B,1,H,W] = {list(masks.shape)}")
    ok(float(masks.min()) >= 0 and float(masks.max()) <= 1, f"masks in [0,1] (min {float(masks.min()):.4f}, max {float(masks.max()):.4f})")
    ok(changed(clf0, casm.clf), "every classifier parameter changed by the eq. 8 SGD step")
    ok(all(not f.requires_grad and f.grad_fn is None for f in feats), "decoder input features are detached (stop-gradient)")
    ok(float(clean_correct.sum()) == 0, "all-wrong labels: c_b = 0 for every image")
    casm.pool.update(casm.t, casm.clf)
    ok(len(casm.pool.snapshots) == 1, "L100 pool took a snapshot at t = 0")
    clf1 = params(casm.clf)
    clf_grads = [p.grad for p in casm.clf.parameters()]
    hits = {"clf": 0, "dec": 0}
    hooks = [p.register_hook(lambda g, k="clf": hits.__setitem__(k, hits[k] + 1)) for p in casm.clf.parameters()]
    hooks += [p.register_hook(lambda g, k="dec": hits.__setitem__(k, hits[k] + 1)) for p in casm.dec.parameters()]
    m_loss, parts, m2, norm = casm.masker_phase(x, y_wrong, feats, clean_correct, choice)
    for h in hooks:
        h.remove()
    casm.t += 1
    ok(math.isfinite(m_loss), f"masker loss finite ({m_loss:.4g})")
    ok(float(parts["gate"].sum()) == 0 and float(parts["gated_area"]) == 0, "all-wrong labels: g_b = 0, gated area term = 0")
    ok(m_loss == 0 and norm == 0, f"all-wrong labels: masker loss 0 and decoder gradient 0 (norm {norm})")
    ok(hits["clf"] == 0, "masker backward computed no gradient for any classifier (encoder) parameter")
    ok(hits["dec"] == len(casm.dec_params), f"masker backward reached every decoder parameter ({hits['dec']})")
    ok(all(torch.equal(a, p) for a, p in zip(clf1, casm.clf.parameters())), "masker step left the classifier weights untouched")
    ok(all(a is p.grad for a, p in zip(clf_grads, casm.clf.parameters())), "classifier .grad untouched by the masker step")
    ok(any(not torch.equal(a, p) for a, p in zip(dec0, casm.dec.parameters())), "decoder weights moved (zero gradient: Adam's weight decay alone)")
    dec_bn_after = [b for n, b in casm.dec.named_buffers() if n.endswith("num_batches_tracked")]
    ok(all(int(a) == int(b) + 1 for a, b in zip(dec_bn_after, dec_bn_before)), "decoder BN running stats updated once per iteration (second pass frozen)")
    ok(int(casm.clf.bn1.num_batches_tracked) == clf_bn0 + 3, "classifier ran 3 training-mode forwards (clean, masked, scorer)")
    with torch.enable_grad():
        mm = casm.dec(feats)
        gr = torch.autograd.grad(mm.sum(), list(casm.clf.parameters()), allow_unused=True)
    ok(all(v is None for v in gr), "masks do not depend on any classifier parameter")

    # -- iteration 1: scored by the snapshot (eval mode); all labels right for f_k on the clean batch.
    y_right = clean_prediction()
    dec1 = params(casm.dec)
    clf_bn1 = int(casm.clf.bn1.num_batches_tracked)
    stats = casm.iteration(x, y_right)
    snap = casm.snapshot_model
    ok(stats["scored_by"] == "snapshot" and snap is not None and not snap.training, "iteration 1 is scored by the snapshot, in eval mode")
    ok(all(torch.equal(v, casm.pool.snapshots[0][k]) for k, v in snap.state_dict().items()), "snapshot model holds the t = 0 weights (BN stats not updated)")
    ok(not any(p.requires_grad for p in snap.parameters()), "snapshot parameters take no gradient")
    ok(int(casm.clf.bn1.num_batches_tracked) == clf_bn1 + 2, "classifier ran 2 training-mode forwards (clean, masked)")
    ok(stats["acc_clean"] == 1.0, "all-right labels: c_b = 1 for every image")
    ok(abs(stats["gated"] - (1 - stats["acc_masked"])) < 1e-6, f"g_b = c_b * [masked wrong]: gated {stats['gated']} = 1 - acc_masked {stats['acc_masked']}")
    expect = -stats["entropy"] + stats["gated_area_term"]
    ok(abs(stats["masker_loss"] - expect) < 1e-5 * max(1, abs(expect)), f"L_m = -mean H + lambda mean(g area) ({stats['masker_loss']:.6f} vs {expect:.6f})")
    ok(stats["masker_grad_norm"] > 0, f"decoder gradient non-zero (norm {stats['masker_grad_norm']:.4g})")
    ok(changed(dec1, casm.dec), "decoder parameters changed")

    # -- the loss function on its own: the three gate cases, and gradient-norm clipping.
    lg = torch.tensor([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])
    labels = torch.tensor([0, 0, 2])  # masked: right, wrong, right
    cc = torch.tensor([1.0, 1.0, 0.0])  # clean: right, right, wrong
    mk = torch.full((3, 1, 2, 2), 0.25)
    loss, p = masker_loss(lg, labels, cc, mk, 2.0)
    ok(p["gate"].tolist() == [0.0, 1.0, 0.0], "gate: only clean-right & masked-wrong images pay for area")
    logp = torch.log_softmax(lg, 1)
    per_h = -(logp.exp() * logp).sum(1)
    ok(abs(float(loss) - (float(-(cc * per_h).mean()) + 2.0 * 0.25 / 3)) < 1e-6, "loss formula on a hand-made batch")
    big = [torch.nn.Parameter(torch.zeros(3))]
    big[0].grad = torch.tensor([30.0, 40.0, 0.0])
    n = torch.nn.utils.clip_grad_norm_(big, 10.0)
    ok(abs(float(n) - 50) < 1e-4 and abs(float(big[0].grad.norm()) - 10) < 1e-3, "global-norm clip at 10")
    print(f"check: all {len(results)} assertions passed")


# ------------------------------------------------------------------ main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="timed calls per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per mode first")
    p.add_argument("--depths", default="3,4,6,3")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: os.cpu_count())")
    p.add_argument("--interop-threads", type=int, default=0, help="torch.set_num_interop_threads (default: torch's)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="lambda_R (default: L100/entropy preset scaled to the classes)")
    p.add_argument("--choice", choices=("alternate", "random"), default="alternate", help="how f' is drawn (see above)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for models and input (default NCHW)")
    p.add_argument("--autocast", choices=("off", "bf16"), default="off",
                   help="bf16: every step under torch.autocast('cpu', dtype=torch.bfloat16), as a PyTorch user on a CPU with AMX/AVX512-BF16 would run it")
    p.add_argument("--mode", choices=("all",) + MODES, default="all")
    p.add_argument("--no-isolate", action="store_true", help="run the modes in this process, not one subprocess each")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help=f"correctness self-check at {CHECK_CONFIG}")
    p.add_argument("--probe", action="store_true", help="print versions as JSON; exit 1 if torch/torchvision do not import")
    args = p.parse_args()
    if args.size % 32:
        p.error("--size must be a multiple of 32")
    if args.steps < 1:
        p.error("--steps must be >= 1")
    if args.probe:
        probe()
    elif args.check:
        check(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()

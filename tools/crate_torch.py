#!/usr/bin/python3
"""CRATE in PyTorch: the reference the C++ executor (runtime/Crate.cpp) is checked against.

Written from the formulas (docs/crate.md, "The model, as implemented"); the module tree
gives state_dict keys equal to the official checkpoint keys (without `module.`).

  crate_torch.py checkpoint --config tiny --seed 0 -o ckpt.pth [--format state_dict|bare] [--module-prefix]
  crate_torch.py images --config tiny --batch 4 --seed 1 -o images.h5
  crate_torch.py logits --checkpoint ckpt.pth --images images.h5 -o logits.h5 [--heads K | --config NAME]
  crate_torch.py params [--config NAME ...]     parameter counts of the presets
"""
import argparse
import math
import os
import re
import sys

import torch
import torch.nn.functional as F
from torch import nn

# Architecture presets (BRIEF section 5): 224px images, patch 16, 3 channels, 1000 classes.
PRESETS = {
    "tiny": dict(dim=384, depth=12, heads=6),
    "small": dict(dim=576, depth=12, heads=12),
    "base": dict(dim=768, depth=12, heads=12),
    "large": dict(dim=1024, depth=24, heads=16),
}
# The parameter counts the paper gives, for the check in `params`.
PAPER_PARAMS = {"tiny": 6.09e6, "small": 13.12e6, "base": 22.80e6, "large": 77.64e6}
DEFAULTS = dict(image_size=224, patch_size=16, channels=3, num_classes=1000, eta=0.1, lambd=0.1, pool="cls")
LN_EPS = 1e-5
# The LayerNorms outside the layers (the layers' own are `*.norm`).
LAYER_NORMS = ("to_patch_embedding.1", "to_patch_embedding.3", "mlp_head.0")


def make_config(preset=None, **overrides):
    """The full configuration: defaults, then the preset, then the overrides that are not None."""
    cfg = dict(DEFAULTS)
    if preset is not None:
        cfg.update(PRESETS[preset])
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def expected_shapes(cfg):
    """Every tensor of a configuration with its shape, in the order of runtime/Crate.cpp's
    crateTensorShapes (pos_embedding and cls_token keep their leading 1 dims)."""
    d, c = cfg["dim"], cfg["num_classes"]
    pd = cfg["channels"] * cfg["patch_size"] ** 2
    tokens = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
    v = [
        ("to_patch_embedding.1.weight", (pd,)),
        ("to_patch_embedding.1.bias", (pd,)),
        ("to_patch_embedding.2.weight", (d, pd)),
        ("to_patch_embedding.2.bias", (d,)),
        ("to_patch_embedding.3.weight", (d,)),
        ("to_patch_embedding.3.bias", (d,)),
        ("pos_embedding", (1, tokens, d)),
        ("cls_token", (1, 1, d)),
    ]
    for l in range(cfg["depth"]):
        p = f"transformer.layers.{l}."
        v += [
            (p + "0.norm.weight", (d,)),
            (p + "0.norm.bias", (d,)),
            (p + "0.fn.qkv.weight", (d, d)),
            (p + "0.fn.to_out.0.weight", (d, d)),
            (p + "0.fn.to_out.0.bias", (d,)),
            (p + "1.norm.weight", (d,)),
            (p + "1.norm.bias", (d,)),
            (p + "1.fn.weight", (d, d)),
        ]
    v += [("mlp_head.0.weight", (d,)), ("mlp_head.0.bias", (d,)), ("mlp_head.1.weight", (c, d)),
          ("mlp_head.1.bias", (c,))]
    return v


class Patches(nn.Module):
    """b c (h p1) (w p2) -> b (h w) (p1 p2 c): channels last inside a patch. No parameters,
    so it holds index 0 of to_patch_embedding as einops' Rearrange does."""

    def __init__(self, patch_size):
        super().__init__()
        self.p = patch_size

    def forward(self, x):
        b, c, hh, ww = x.shape
        p = self.p
        x = x.reshape(b, c, hh // p, p, ww // p, p)   # b c h p1 w p2
        x = x.permute(0, 2, 4, 3, 5, 1)                # b h w p1 p2 c
        return x.reshape(b, (hh // p) * (ww // p), p * p * c)


class MSSA(nn.Module):
    """Multi-head subspace self-attention: one projection (qkv, no bias) is query, key and value."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, z):
        b, n, d = z.shape
        k, p = self.heads, d // self.heads
        w = self.qkv(z).reshape(b, n, k, p).transpose(1, 2)          # b k n p
        a = torch.softmax(w @ w.transpose(-1, -2) / math.sqrt(p), dim=-1)
        o = (a @ w).transpose(1, 2).reshape(b, n, d)                 # concat of the heads
        return self.to_out(o)


class ISTA(nn.Module):
    """One proximal step on lambda|x|_1 + 1/2|z - D x|^2 from x = z, in the official PyTorch
    form (D = self.weight as stored): relu(z + eta (z D - z D^T D) - eta lambda)."""

    def __init__(self, dim, eta, lambd):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        self.eta, self.lambd = eta, lambd

    def forward(self, z):
        x1 = F.linear(z, self.weight)              # z D^T
        grad_1 = F.linear(x1, self.weight.t())     # z D^T D
        grad_2 = F.linear(z, self.weight.t())      # z D
        return F.relu(z + self.eta * (grad_2 - grad_1) - self.eta * self.lambd)


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["dim"]
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(d, MSSA(d, cfg["heads"])), PreNorm(d, ISTA(d, cfg["eta"], cfg["lambd"]))])
            for _ in range(cfg["depth"]))

    def forward(self, x):
        for attn, ista in self.layers:
            x = x + attn(x)   # MSSA with its residual
            x = ista(x)       # no residual around ISTA
        return x


class CRATE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        d, ps = cfg["dim"], cfg["patch_size"]
        if d % cfg["heads"] or cfg["image_size"] % ps:
            raise ValueError(f"dim {d} must be divisible by heads {cfg['heads']} and image_size "
                             f"{cfg['image_size']} by patch_size {ps}")
        pd = cfg["channels"] * ps * ps
        tokens = (cfg["image_size"] // ps) ** 2 + 1
        self.to_patch_embedding = nn.Sequential(
            Patches(ps), nn.LayerNorm(pd, eps=LN_EPS), nn.Linear(pd, d), nn.LayerNorm(d, eps=LN_EPS))
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, d))
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.transformer = Transformer(cfg)
        self.mlp_head = nn.Sequential(nn.LayerNorm(d, eps=LN_EPS), nn.Linear(d, cfg["num_classes"]))

    def forward(self, images):
        x = self.to_patch_embedding(images)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embedding
        x = self.transformer(x)
        x = x.mean(dim=1) if self.cfg["pool"] == "mean" else x[:, 0]
        return self.mlp_head(x)

    def randomize(self, seed):
        """Random weights. LayerNorms are perturbed away from the identity so that a
        mix-up of a norm's weight and bias, or of two norms, changes the logits."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in self.named_parameters():
                if name.rsplit(".", 1)[0].endswith("norm") or name.rsplit(".", 1)[0] in LAYER_NORMS:
                    base = 1.0 if name.endswith("weight") else 0.0
                    t.copy_(base + 0.1 * torch.randn(t.shape, generator=g))
                elif name in ("pos_embedding", "cls_token"):
                    t.copy_(torch.randn(t.shape, generator=g))
                elif name.endswith("1.fn.weight"):
                    # Kaiming-uniform scale, U(-sqrt(6/d), sqrt(6/d)), as a square dictionary.
                    b = math.sqrt(6.0 / t.shape[1])
                    t.copy_((torch.rand(t.shape, generator=g) * 2 - 1) * b)
                else:
                    # PyTorch's Linear default scale, U(-1/sqrt(in), 1/sqrt(in)); a bias uses its weight's `in`.
                    w = self.get_parameter(name[: -len("bias")] + "weight") if name.endswith("bias") else t
                    b = 1.0 / math.sqrt(w.shape[1])
                    t.copy_((torch.rand(t.shape, generator=g) * 2 - 1) * b)
        return self


def count_params(cfg):
    return sum(math.prod(s) for _, s in expected_shapes(cfg))


# ------------------------------------------------------------------------------------
# Checkpoints

def state_dict_of(obj):
    """The state dict inside a loaded checkpoint: {'state_dict': sd}, {'model': sd} or sd itself
    (None when obj is none of these). Keys lose a `module.` prefix."""
    if not isinstance(obj, dict):
        return None
    for k in ("state_dict", "model"):
        if isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in obj.items()}


def _shape(sd, key):
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _vote(sd, sources):
    """The most common of shape[i] over the (key, rank, i) sources present with that rank
    (the first source wins a tie), so that one malformed tensor does not decide a size."""
    vals = []
    for key, rank, i in sources:
        s = _shape(sd, key)
        if s is not None and len(s) == rank:
            vals.append(s[i])
    return max(vals, key=vals.count) if vals else None


LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.")


def infer_config(sd, preset=None, heads=None, channels=None, eta=None, lambd=None, pool=None):
    """The configuration of a state dict (keys without `module.`), read off its shapes: dim,
    depth, patch size (given the channels, 3 by default), image size, classes. Heads cannot
    be read off the shapes: they come from `heads` or the preset. Returns (cfg, problems);
    a size with no tensor to read it from keeps the default (the missing tensors are
    reported by the key check)."""
    cfg = make_config(preset, heads=heads, channels=channels, eta=eta, lambd=lambd, pool=pool)
    problems = []
    dim = _vote(sd, [("cls_token", 3, 2), ("pos_embedding", 3, 2), ("to_patch_embedding.2.weight", 2, 0),
                     ("to_patch_embedding.2.bias", 1, 0), ("to_patch_embedding.3.weight", 1, 0),
                     ("to_patch_embedding.3.bias", 1, 0), ("mlp_head.0.weight", 1, 0), ("mlp_head.0.bias", 1, 0),
                     ("mlp_head.1.weight", 2, 1), ("transformer.layers.0.0.norm.weight", 1, 0)])
    layers = {int(m.group(1)) for k in sd if isinstance(k, str) and (m := LAYER_KEY.match(k))}
    depth = max(layers) + 1 if layers else None
    if dim is None:
        problems.append("cannot read dim off the shapes (no cls_token, pos_embedding, to_patch_embedding "
                        "or mlp_head tensor of the expected rank)")
    if depth is None:
        problems.append("no 'transformer.layers.*' keys: cannot read the depth")
    if preset is not None:
        want = PRESETS[preset]
        for name, got in (("dim", dim), ("depth", depth)):
            if got is not None and got != want[name]:
                problems.append(f"the checkpoint has {name} {got}, but --config {preset} has {name} {want[name]}")
    if dim is not None:
        cfg["dim"] = dim
    if depth is not None:
        cfg["depth"] = depth
    if "heads" not in cfg:
        problems.append("heads cannot be read off the shapes: give --heads K or --config NAME")
    elif dim is not None and (cfg["heads"] < 1 or dim % cfg["heads"]):
        problems.append(f"dim {dim} is not divisible by heads {cfg['heads']}")

    c = cfg["channels"]
    pd = _vote(sd, [("to_patch_embedding.1.weight", 1, 0), ("to_patch_embedding.1.bias", 1, 0),
                    ("to_patch_embedding.2.weight", 2, 1)])
    if pd is not None:
        ps = math.isqrt(pd // c) if c > 0 and pd % c == 0 else 0
        if ps < 1 or ps * ps * c != pd:
            problems.append(f"patch_dim {pd} is not channels ({c}) times a square patch size: give --channels")
        else:
            cfg["patch_size"] = ps
    tokens = _vote(sd, [("pos_embedding", 3, 1)])
    if tokens is not None:
        side = math.isqrt(max(tokens - 1, 0))
        if tokens < 2 or side * side != tokens - 1:
            problems.append(f"pos_embedding has {tokens} tokens: expected 1 + a square number of patches")
        else:
            cfg["image_size"] = side * cfg["patch_size"]
    classes = _vote(sd, [("mlp_head.1.weight", 2, 0), ("mlp_head.1.bias", 1, 0)])
    if classes is not None:
        cfg["num_classes"] = classes
    return cfg, problems


# ------------------------------------------------------------------------------------
# Command line

def add_config_args(p, shapes=True):
    """The preset and its overrides; without `shapes`, only what a checkpoint's shapes do not tell."""
    p.add_argument("--config", choices=sorted(PRESETS), help="architecture preset")
    p.add_argument("--heads", type=int)
    p.add_argument("--channels", type=int)
    if shapes:
        p.add_argument("--dim", type=int)
        p.add_argument("--depth", type=int)
        p.add_argument("--image-size", type=int)
        p.add_argument("--patch-size", type=int)
        p.add_argument("--classes", type=int)
    p.add_argument("--eta", type=float)
    p.add_argument("--lambda", dest="lambd", type=float)
    p.add_argument("--pool", choices=["cls", "mean"])


def config_from_args(a, require_arch=True):
    cfg = make_config(a.config, dim=a.dim, depth=a.depth, heads=a.heads, image_size=a.image_size,
                      patch_size=a.patch_size, channels=a.channels, num_classes=a.classes, eta=a.eta,
                      lambd=a.lambd, pool=a.pool)
    missing = [k for k in ("dim", "depth", "heads") if require_arch and k not in cfg]
    if missing:
        raise SystemExit(f"crate_torch: error: give --config or --{', --'.join(missing)}")
    return cfg


def write_h5(path, name, array):
    import h5py
    tmp = path + ".tmp"
    # The format raspc reads: HDF5 1.10 (checksummed metadata), a checksum on the data.
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        f.create_dataset(name, data=array, chunks=array.shape if array.size else None, fletcher32=bool(array.size))
    os.replace(tmp, path)


def cmd_checkpoint(a):
    cfg = config_from_args(a)
    model = CRATE(cfg).randomize(a.seed)
    sd = model.state_dict()
    if a.module_prefix:
        sd = {"module." + k: v for k, v in sd.items()}
    torch.save({"state_dict": sd} if a.format == "state_dict" else sd, a.out)
    print(f"wrote {a.out}: {count_params(cfg)} parameters, dim {cfg['dim']}, depth {cfg['depth']}, "
          f"heads {cfg['heads']}, {cfg['image_size']}px, {cfg['num_classes']} classes, seed {a.seed}")


def cmd_images(a):
    cfg = config_from_args(a, require_arch=False)
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.batch, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g)
    write_h5(a.out, "images", x.numpy())
    print(f"wrote {a.out}: images [{a.batch}, {cfg['channels']}, {cfg['image_size']}, {cfg['image_size']}]")


def load_model(path, a):
    sd = state_dict_of(torch.load(path, map_location="cpu", weights_only=True))
    if sd is None:
        raise SystemExit(f"crate_torch: error: {path}: not a state dict")
    cfg, problems = infer_config(sd, preset=a.config, heads=a.heads, channels=a.channels, eta=a.eta,
                                 lambd=a.lambd, pool=a.pool)
    if problems:
        raise SystemExit(f"crate_torch: error: {path}: " + "; ".join(problems))
    model = CRATE(cfg)
    model.load_state_dict(sd)
    return model.eval()


def run_logits(model, images, threads=None):
    if threads:
        torch.set_num_threads(threads)
    with torch.inference_mode():
        return model(images)


def cmd_logits(a):
    import h5py
    model = load_model(a.checkpoint, a)
    with h5py.File(a.images, "r") as f:
        images = torch.from_numpy(f["images"][()].astype("float32"))
    logits = run_logits(model, images, a.threads)
    write_h5(a.out, "logits", logits.numpy())
    print(f"wrote {a.out}: logits [{logits.shape[0]}, {logits.shape[1]}]")


def cmd_params(a):
    names = [a.config] if a.config else sorted(PRESETS, key=lambda n: PRESETS[n]["dim"] * PRESETS[n]["depth"])
    for n in names:
        got = count_params(make_config(n))
        print(f"{n:<6} {got:>11,} parameters ({got / 1e6:.2f}M; paper {PAPER_PARAMS[n] / 1e6:.2f}M)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="crate_torch.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("checkpoint", help="write a randomly initialised checkpoint (torch.save)")
    add_config_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["state_dict", "bare"], default="state_dict",
                   help="{'state_dict': sd} (as the official checkpoints) or the bare state dict")
    p.add_argument("--module-prefix", action="store_true", help="keys start with 'module.' (DataParallel)")
    p.add_argument("-o", "--out", required=True)
    p = sub.add_parser("images", help="write random images, dataset 'images' [B, C, S, S] float32")
    add_config_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--out", required=True)
    p = sub.add_parser("logits", help="run a checkpoint on images, write dataset 'logits' [B, classes]")
    add_config_args(p, shapes=False)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("-o", "--out", required=True)
    p = sub.add_parser("params", help="parameter counts of the presets")
    p.add_argument("--config", choices=sorted(PRESETS))
    a = ap.parse_args(argv)
    {"checkpoint": cmd_checkpoint, "images": cmd_images, "logits": cmd_logits, "params": cmd_params}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

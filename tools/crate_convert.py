#!/usr/bin/python3
"""Converts a CRATE PyTorch checkpoint to raspc's HDF5 layout (docs/crate.md).

  crate_convert.py CHECKPOINT.pth -o MODEL.h5 [--config tiny|small|base|large] [--heads K]
                   [--channels C] [--eta E] [--lambda L] [--pool cls|mean] [--force] [--unsafe-pickle]

Accepts {'state_dict': sd}, {'model': sd} or a bare state dict, with or without the
`module.` prefix. dim, depth, patch size, image size and classes are read off the shapes;
heads come from --heads or --config. Every expected key is checked (presence, type, shape,
finite values), and that there are no others; every problem is reported at once, exit 1 with
`crate_convert: error: FILE: ...`, exit 2 for a command-line error.
"""
import argparse
import math
import os
import pickle
import signal
import stat
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crate_torch  # noqa: E402  (the presets, the expected shapes and the shape inference)

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROG = "crate_convert"
MAX_LISTED = 20  # per kind of problem; the rest are counted


class ConvertError(Exception):
    pass


def fmt_shape(s):
    return "[" + ", ".join(str(x) for x in s) + "]"


def load_checkpoint(path, unsafe_pickle):
    if not os.path.exists(path):
        raise ConvertError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConvertError(f"{path}: is a directory")
    if not os.access(path, os.R_OK):
        raise ConvertError(f"{path}: cannot open: permission denied")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; before PyTorch 1.6, a pickle (protocol 2+: 0x80).
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise ConvertError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as e:
        # torch.load(weights_only=True) wraps its reason in a long advice text.
        why = str(e).split("WeightsUnpickler error: ", 1)[-1]
        if why.startswith("Unsupported"):
            raise ConvertError(f"{path}: weights-only loading refuses an object in the checkpoint ({first_line(why)}); "
                               "if you trust the file, pass --unsafe-pickle (it runs code from the file)") from None
        raise ConvertError(f"{path}: not a PyTorch checkpoint ({first_line(why)})") from None
    except Exception as e:  # torch.load reports a malformed file in many ways
        raise ConvertError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from None
    sd = crate_torch.state_dict_of(obj)
    if sd is None:
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, expected a dict (a state dict, or a checkpoint "
                           "with 'state_dict' or 'model')")
    if not sd:
        raise ConvertError(f"{path}: the state dict is empty")
    return sd


def first_line(e):
    s = str(e).strip()
    return s.splitlines()[0] if s else "no details"


def check(sd, cfg):
    """Every problem of the state dict against the configuration, as lines; and the tensors
    as float32 numpy arrays."""
    missing, wrong, bad_type, nonfinite = [], [], [], []
    arrays = {}
    expected = crate_torch.expected_shapes(cfg)
    names = {k for k, _ in expected}
    for key, shape in expected:
        if key not in sd:
            missing.append(f"'{key}' {fmt_shape(shape)}")
            continue
        t = sd[key]
        if not isinstance(t, torch.Tensor):
            bad_type.append(f"'{key}' is a {type(t).__name__}, expected a tensor")
            continue
        if not t.is_floating_point():
            bad_type.append(f"'{key}' has dtype {str(t.dtype).replace('torch.', '')}, expected a floating-point tensor")
            continue
        if tuple(t.shape) != tuple(shape):
            wrong.append(f"'{key}' is {fmt_shape(t.shape)}, expected {fmt_shape(shape)}")
            continue
        a = t.detach().to(torch.float32).contiguous().numpy()
        bad = ~np.isfinite(a)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            n = int(bad.sum())
            nonfinite.append(f"'{key}' has {n} non-finite value{'s' if n > 1 else ''} "
                             f"(first: {a[first]} at {fmt_shape(first)})")
        arrays[key] = a
    unexpected = [f"'{k}'" + (f" {fmt_shape(v.shape)}" if isinstance(v, torch.Tensor) else "")
                  for k, v in sd.items() if k not in names]
    lines = []
    for kind, items in (("missing", missing), ("wrong shape", wrong), ("wrong type", bad_type),
                        ("unexpected", unexpected), ("non-finite", nonfinite)):
        lines += [f"{kind}: {x}" for x in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"{kind}: ... and {len(items) - MAX_LISTED} more")
    return lines, arrays


def describe(cfg):
    heads = f", heads {cfg['heads']}" if "heads" in cfg else ""
    return (f"dim {cfg['dim']}, depth {cfg['depth']}{heads}, {cfg['image_size']}px, "
            f"patch {cfg['patch_size']}, {cfg['channels']} channels, {cfg['num_classes']} classes")


def check_output(path, inputs, force):
    """The rule every raspc writer follows (support/Files.h): never a directory, a device or
    another non-regular file, a dangling symbolic link or one of the inputs, even with
    --force; an existing file only with --force. Returns the file to replace or create (a
    symbolic link's target)."""
    if not path:
        raise ConvertError("-o: empty file name")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ConvertError(f"{path}: is a dangling symbolic link") from None
        return path
    if stat.S_ISDIR(st.st_mode):
        raise ConvertError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ConvertError(f"{path}: is not a regular file")
    for i in inputs:
        try:
            if os.path.samefile(i, path):
                raise ConvertError(f"{path}: is an input of this command")
        except OSError:
            pass
    if not force:
        raise ConvertError(f"{path}: exists; pass --force to overwrite it")
    return os.path.realpath(path)


def write_model(path, cfg, arrays, force=False, inputs=()):
    """The layout readCrateModel reads (runtime/Crate.cpp): float32 datasets at the root in the
    order of crateTensorShapes, chunked with a checksum as writeCrateModel writes them, and
    group `metadata`, in the HDF5 1.10 format (checksummed metadata), as raspc requires. Written to a temporary file beside `path`, then renamed."""
    import h5py
    target = check_output(path, inputs, force)
    d = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(target) + ".", suffix=".tmp")
    except OSError as e:
        raise ConvertError(f"{path}: cannot write: {e.strerror}") from None
    os.close(fd)
    # SIGTERM mid-write: unwind through `finally`, which removes the temporary file.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
            for key, _ in crate_torch.expected_shapes(cfg):
                a = arrays[key]
                # raspc requires a fletcher32 checksum on every non-empty dataset. A chunk
                # holds under 4 GiB: larger tensors are chunked by rows.
                if a.size:
                    rows = max(1, min(a.shape[0], (2 ** 31) // max(1, a.nbytes // a.shape[0])))
                    chunks = (rows,) + a.shape[1:]
                else:
                    chunks = None
                f.create_dataset(key, data=a, dtype="<f4", chunks=chunks, fletcher32=bool(a.size))
            g = f.create_group("metadata")

            def text(s):
                return np.array(s.encode(), dtype=h5py.string_dtype("utf-8", len(s.encode())))
            g.attrs["format"] = text("crate")
            g.attrs["format_version"] = np.int64(1)
            for k in ("image_size", "patch_size", "channels", "dim", "depth", "heads", "num_classes"):
                g.attrs[k] = np.int64(cfg[k])
            g.attrs["eta"] = np.float64(cfg["eta"])
            g.attrs["lambda"] = np.float64(cfg["lambd"])
            g.attrs["pool"] = text(cfg["pool"])
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it 0600
        if force:
            os.replace(tmp, target)
        else:
            # Never replace a file that appeared since the check.
            os.link(tmp, target)
    except FileExistsError:
        raise ConvertError(f"{path}: exists; pass --force to overwrite it") from None
    except OSError as e:
        raise ConvertError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if os.path.exists(tmp):
            os.remove(tmp)


def convert(a):
    check_output(a.out, [a.checkpoint], a.force)  # before the work
    sd = load_checkpoint(a.checkpoint, a.unsafe_pickle)
    non_str = [k for k in sd if not isinstance(k, str)]
    if non_str:
        raise ConvertError(f"{a.checkpoint}: not a state dict (key {non_str[0]!r} is not a string)")
    cfg, problems = crate_torch.infer_config(sd, preset=a.config, heads=a.heads, channels=a.channels, eta=a.eta,
                                             lambd=a.lambd, pool=a.pool)
    lines = list(problems)
    arrays = {}
    if "dim" in cfg and "depth" in cfg:
        more, arrays = check(sd, cfg)
        lines += more
    if lines:
        what = describe(cfg) if "dim" in cfg and "depth" in cfg else "CRATE"
        raise ConvertError(f"{a.checkpoint}: does not match {what} ({len(lines)} problem"
                           f"{'s' if len(lines) > 1 else ''}):\n" + "\n".join("  " + x for x in lines))
    write_model(a.out, cfg, arrays, force=a.force, inputs=[a.checkpoint])
    n = sum(x.size for x in arrays.values())
    print(f"wrote {a.out}: {n} parameters, {describe(cfg)}, pool {cfg['pool']}, eta {cfg['eta']:g}, "
          f"lambda {cfg['lambd']:g}")


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s} is not a positive integer")
    return v


def non_negative(s):
    v = float(s)
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"{s} is not a finite number >= 0")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="PyTorch checkpoint (.pth)")
    ap.add_argument("-o", "--out", required=True, help="the CRATE model to write (.h5)")
    ap.add_argument("--config", choices=sorted(crate_torch.PRESETS),
                    help="architecture preset: heads, and dim and depth to check against")
    ap.add_argument("--heads", type=positive, help="attention heads (cannot be read off the shapes)")
    ap.add_argument("--channels", type=positive, help="image channels (default 3)")
    ap.add_argument("--eta", type=non_negative, help="ISTA step size (default 0.1)")
    ap.add_argument("--lambda", dest="lambd", type=non_negative, help="ISTA sparsity weight (default 0.1)")
    ap.add_argument("--pool", choices=["cls", "mean"], help="pooling before the head (default cls)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output")
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="load checkpoints holding arbitrary Python objects (runs code from the file)")
    a = ap.parse_args(argv)
    try:
        convert(a)
    except ConvertError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

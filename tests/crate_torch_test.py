#!/usr/bin/python3
"""CRATE: raspc's C++ executor against the PyTorch reference (tools/crate_torch.py), through
the checkpoint converter (tools/crate_convert.py), and the converter's errors.

  crate_torch_test.py --raspc PATH/TO/raspc      (registered with ctest by tests/CMakeLists.txt)
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np
import torch

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
sys.dont_write_bytecode = True  # nothing written into the source tree
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
sys.path.insert(0, TOOLS)
import crate_convert  # noqa: E402
import crate_torch  # noqa: E402

RASPC = None          # set from --raspc
REL_TOL = 1e-4        # max|ours - torch| / max|torch|
TIE = 1e-4            # logits closer than this (relative to max|torch|) may swap places in a top-5

# A small configuration that differs from the defaults everywhere the converter must not
# assume them: channels, patch and image size, classes, pool, eta, lambda.
SMALL = dict(dim=64, depth=2, heads=4, image_size=32, patch_size=8, channels=2, num_classes=10, pool="mean",
             eta=0.2, lambd=0.05)
SMALL_FLAGS = ["--heads", "4", "--channels", "2", "--pool", "mean", "--eta", "0.2", "--lambda", "0.05"]
SMALL_DESC = "dim 64, depth 2, heads 4, 32px, patch 8, 2 channels, 10 classes"


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def tool(name, *args):
    return run([sys.executable, os.path.join(TOOLS, name), *args])


def check_ok(test, result, what):
    rc, out, err = result
    test.assertEqual(rc, 0, f"{what} failed (exit {rc}):\n{out}{err}")
    return out


def read(path, name):
    with h5py.File(path, "r") as f:
        return f[name][()]


def convert_in_process(*argv):
    """crate_convert's main() in this process (no torch import per case): (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = crate_convert.main(list(argv))
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, err.getvalue()


class Compare:
    """raspc crate run on a converted model beside PyTorch's logits on the same images."""

    def compare(self, model_h5, images_h5, torch_logits, top=5):
        out_h5 = model_h5 + ".logits.h5"
        out = check_ok(self, run([RASPC, "crate", "run", model_h5, "--input", images_h5, "--logits", out_h5,
                                  "--json", "--top", str(top)]), "raspc crate run")
        ours = read(out_h5, "logits")
        self.assertEqual(ours.shape, torch_logits.shape)
        scale = float(np.abs(torch_logits).max())
        rel = float(np.abs(ours - torch_logits).max()) / scale
        print(f"\n  {os.path.basename(model_h5)}: max|ours - torch| / max|torch| = {rel:.3g} "
              f"(max|torch| = {scale:.4g}, {ours.shape[0]} images x {ours.shape[1]} classes)")
        self.assertLess(rel, REL_TOL)
        lines = [json.loads(x) for x in out.splitlines()]
        self.assertEqual([x["image"] for x in lines], list(range(ours.shape[0])))
        for b, line in enumerate(lines):
            got = [c for c, _ in line["top"]]
            want = list(np.argsort(-torch_logits[b], kind="stable")[:top])
            # The printed logits are the stored ones (shortest text that reads back as float32).
            self.assertEqual([np.float32(v) for _, v in line["top"]], [ours[b, c] for c in got])
            for rank, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    gap = abs(float(torch_logits[b, g]) - float(torch_logits[b, w])) / scale
                    self.assertLess(gap, TIE, f"image {b} rank {rank}: ours class {g}, torch class {w}, "
                                              f"not a near-tie (gap {gap:.3g})")
        return rel


class TinyEndToEnd(unittest.TestCase, Compare):
    """The full CRATE-tiny (224px, patch 16, 1000 classes, 12 layers), both checkpoint formats."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="crate_torch_test.")
        d = cls.tmp.name
        cls.sd = os.path.join(d, "tiny_state_dict.pth")
        cls.bare = os.path.join(d, "tiny_bare.pth")
        cls.images = os.path.join(d, "images.h5")
        cls.torch_h5 = os.path.join(d, "torch_logits.h5")
        for r in (tool("crate_torch.py", "checkpoint", "--config", "tiny", "--seed", "0", "--format", "state_dict",
                       "--module-prefix", "-o", cls.sd),
                  tool("crate_torch.py", "checkpoint", "--config", "tiny", "--seed", "0", "--format", "bare",
                       "-o", cls.bare),
                  tool("crate_torch.py", "images", "--config", "tiny", "--batch", "4", "--seed", "1",
                       "-o", cls.images),
                  tool("crate_torch.py", "logits", "--config", "tiny", "--checkpoint", cls.sd, "--images",
                       cls.images, "-o", cls.torch_h5)):
            if r[0] != 0:
                raise RuntimeError(f"crate_torch.py failed (exit {r[0]}):\n{r[1]}{r[2]}")
        cls.torch_logits = read(cls.torch_h5, "logits")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_checkpoint_formats(self):
        saved = torch.load(self.sd)
        self.assertEqual(list(saved), ["state_dict"])
        self.assertTrue(all(k.startswith("module.") for k in saved["state_dict"]))
        bare = torch.load(self.bare)
        self.assertFalse(any(k.startswith("module.") for k in bare))
        want = [k for k, _ in crate_torch.expected_shapes(crate_torch.make_config("tiny"))]
        self.assertEqual(sorted(bare), sorted(want))

    def test_state_dict_with_module_prefix(self):
        out = os.path.join(self.tmp.name, "from_state_dict.h5")
        text = check_ok(self, tool("crate_convert.py", self.sd, "-o", out, "--config", "tiny"), "crate_convert")
        # BRIEF's count for CRATE-tiny is 6.09M.
        self.assertIn(f"wrote {out}: 6090856 parameters, dim 384, depth 12, heads 6, 224px, patch 16, 3 channels, "
                      "1000 classes, pool cls", text)
        self.compare(out, self.images, self.torch_logits)

    def test_bare_state_dict(self):
        out = os.path.join(self.tmp.name, "from_bare.h5")
        check_ok(self, tool("crate_convert.py", self.bare, "-o", out, "--heads", "6"), "crate_convert")
        with h5py.File(out, "r") as f:
            meta = dict(f["metadata"].attrs)
            self.assertEqual(f["pos_embedding"].shape, (1, 197, 384))
            self.assertEqual(f["cls_token"].shape, (1, 1, 384))
        self.assertEqual({k: int(meta[k]) for k in ("image_size", "patch_size", "channels", "dim", "depth", "heads",
                                                    "num_classes", "format_version")},
                         dict(image_size=224, patch_size=16, channels=3, dim=384, depth=12, heads=6,
                              num_classes=1000, format_version=1))
        self.compare(out, self.images, self.torch_logits)


class SmallMeanPool(unittest.TestCase, Compare):
    """A small model off every default (mean pool, 2 channels, eta/lambda given to the converter)."""

    def test_matches_torch(self):
        with tempfile.TemporaryDirectory(prefix="crate_torch_test.") as d:
            model = crate_torch.CRATE(SMALL).randomize(3).eval()
            ckpt = os.path.join(d, "small.pth")
            torch.save({"model": model.state_dict()}, ckpt)
            g = torch.Generator().manual_seed(4)
            images = torch.randn(3, 2, 32, 32, generator=g)
            images_h5 = os.path.join(d, "images.h5")
            crate_torch.write_h5(images_h5, "images", images.numpy())
            out = os.path.join(d, "small.h5")
            rc, err = convert_in_process(ckpt, "-o", out, *SMALL_FLAGS)
            self.assertEqual((rc, err), (0, ""))
            with torch.inference_mode():
                want = model(images).numpy()
            self.compare(out, images_h5, want, top=3)
            # The pool and the ISTA constants matter: the same weights with cls pooling differ.
            model.cfg["pool"] = "cls"
            with torch.inference_mode():
                other = model(images).numpy()
            self.assertGreater(float(np.abs(other - want).max()) / float(np.abs(want).max()), 100 * REL_TOL)


class ConverterErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="crate_torch_test.")
        cls.sd = crate_torch.CRATE(SMALL).randomize(5).state_dict()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def save(self, name, obj):
        p = self.path(name)
        torch.save(obj, p)
        return p

    def broken(self, name, **edits):
        """The small state dict with keys removed (value None), replaced or added."""
        sd = {k: v.clone() for k, v in self.sd.items()}
        for k, v in edits.items():
            k = k.replace("__", ".")
            if v is None:
                del sd[k]
            else:
                sd[k] = v
        return self.save(name, {"state_dict": {"module." + k: v for k, v in sd.items()}})

    def expect(self, ckpt, lines, *extra):
        out = self.path(os.path.basename(ckpt) + ".h5")
        rc, err = convert_in_process(ckpt, "-o", out, *SMALL_FLAGS, *extra)
        n = len(lines)
        want = (f"crate_convert: error: {ckpt}: does not match {SMALL_DESC} ({n} problem{'s' if n > 1 else ''}):\n"
                + "".join(f"  {x}\n" for x in lines))
        self.assertEqual((rc, err), (1, want))
        self.assertFalse(os.path.exists(out))
        self.assertEqual([x for x in os.listdir(self.tmp.name) if x.endswith(".tmp")], [])

    def test_missing_key(self):
        p = self.broken("missing.pth", transformer__layers__1__1__fn__weight=None)
        self.expect(p, ["missing: 'transformer.layers.1.1.fn.weight' [64, 64]"])

    def test_wrong_shape(self):
        p = self.broken("shape.pth", transformer__layers__0__0__fn__qkv__weight=torch.zeros(64, 63))
        self.expect(p, ["wrong shape: 'transformer.layers.0.0.fn.qkv.weight' is [64, 63], expected [64, 64]"])

    def test_unexpected_key(self):
        p = self.broken("unexpected.pth", extra__weight=torch.zeros(3))
        self.expect(p, ["unexpected: 'extra.weight' [3]"])

    def test_nan_weight(self):
        w = self.sd["mlp_head.1.weight"].clone()
        w[1, 2] = float("nan")
        p = self.broken("nan.pth", mlp_head__1__weight=w)
        self.expect(p, ["non-finite: 'mlp_head.1.weight' has 1 non-finite value (first: nan at [1, 2])"])

    def test_every_problem_at_once(self):
        w = self.sd["mlp_head.1.weight"].clone()
        w[3, 0] = float("inf")
        w[4, 1] = float("nan")
        p = self.broken("all.pth", transformer__layers__1__1__fn__weight=None, cls_token=torch.zeros(1, 1, 60),
                        to_patch_embedding__2__bias=torch.zeros(64, dtype=torch.int32), foo=torch.zeros(2, 2),
                        mlp_head__1__weight=w)
        self.expect(p, ["missing: 'transformer.layers.1.1.fn.weight' [64, 64]",
                        "wrong shape: 'cls_token' is [1, 1, 60], expected [1, 1, 64]",
                        "wrong type: 'to_patch_embedding.2.bias' has dtype int32, expected a floating-point tensor",
                        "unexpected: 'foo' [2, 2]",
                        "non-finite: 'mlp_head.1.weight' has 2 non-finite values (first: inf at [3, 0])"])

    def test_heads_are_required(self):
        p = self.save("noheads.pth", self.sd)
        out = self.path("noheads.h5")
        rc, err = convert_in_process(p, "-o", out, "--channels", "2")
        self.assertEqual((rc, err), (1, f"crate_convert: error: {p}: does not match dim 64, depth 2, 32px, patch 8, "
                                        "2 channels, 10 classes (1 problem):\n"
                                        "  heads cannot be read off the shapes: give --heads K or --config NAME\n"))

    def test_config_checks_dim(self):
        p = self.save("tiny_config.pth", self.sd)
        rc, err = convert_in_process(p, "-o", self.path("tiny_config.h5"), "--config", "tiny", "--channels", "2")
        self.assertEqual(rc, 1)
        self.assertIn("  the checkpoint has dim 64, but --config tiny has dim 384\n"
                      "  the checkpoint has depth 2, but --config tiny has depth 12\n", err)

    def test_not_a_checkpoint(self):
        # The real command line: an error line, exit 1, no traceback.
        p = self.path("notes.pth")
        with open(p, "w") as f:
            f.write("not a checkpoint\n")
        rc, out, err = tool("crate_convert.py", p, "-o", self.path("notes.h5"), "--heads", "4")
        self.assertEqual((rc, out, err), (1, "", f"crate_convert: error: {p}: not a PyTorch checkpoint (neither a "
                                                 "torch.save zip archive nor a pickle)\n"))
        rc, err = convert_in_process(self.path("absent.pth"), "-o", self.path("absent.h5"), "--heads", "4")
        self.assertEqual((rc, err), (1, f"crate_convert: error: {self.path('absent.pth')}: no such file\n"))
        lst = self.save("list.pth", [1, 2])
        rc, err = convert_in_process(lst, "-o", self.path("list.h5"), "--heads", "4")
        self.assertEqual((rc, err), (1, f"crate_convert: error: {lst}: holds a list, expected a dict (a state "
                                        "dict, or a checkpoint with 'state_dict' or 'model')\n"))

    def test_output_exists_needs_force(self):
        p = self.save("ok.pth", {"state_dict": self.sd})
        out = self.path("exists.h5")
        with open(out, "w") as f:
            f.write("keep me")
        rc, err = convert_in_process(p, "-o", out, *SMALL_FLAGS)
        self.assertEqual((rc, err), (1, f"crate_convert: error: {out}: exists; pass --force to overwrite it\n"))
        with open(out) as f:
            self.assertEqual(f.read(), "keep me")
        rc, err = convert_in_process(p, "-o", out, *SMALL_FLAGS, "--force")
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(read(out, "mlp_head.1.weight").tolist(), self.sd["mlp_head.1.weight"].tolist())

    def test_outputs_never_written_even_with_force(self):
        p = self.save("input.pth", {"state_dict": self.sd})
        with open(p, "rb") as f:
            before = f.read()
        rc, err = convert_in_process(p, "-o", p, *SMALL_FLAGS, "--force")
        self.assertEqual((rc, err), (1, f"crate_convert: error: {p}: is an input of this command\n"))
        with open(p, "rb") as f:
            self.assertEqual(f.read(), before)
        rc, err = convert_in_process(p, "-o", "/dev/null", *SMALL_FLAGS, "--force")
        self.assertEqual((rc, err), (1, "crate_convert: error: /dev/null: is not a regular file\n"))
        d = os.path.dirname(p)
        rc, err = convert_in_process(p, "-o", d, *SMALL_FLAGS, "--force")
        self.assertEqual((rc, err), (1, f"crate_convert: error: {d}: is a directory\n"))
        self.assertEqual([n for n in os.listdir(d) if n.endswith(".tmp")], [])


def main():
    global RASPC
    ap = argparse.ArgumentParser()
    ap.add_argument("--raspc", required=True, help="the raspc binary")
    a, rest = ap.parse_known_args()
    RASPC = os.path.abspath(a.raspc)
    if not os.access(RASPC, os.X_OK):
        sys.exit(f"crate_torch_test: {RASPC} is not an executable")
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()

"""Throughput of PyTorch on a compiled model: the same weights, the same computation as
raspc's CPU runtime (TransformerLens attention, ReLU MLPs, BOS at 0, PAD masked as keys),
written with PyTorch's optimised CPU kernels: sequences per second at batch 1 and 256 on
random full-length inputs, float32, PyTorch's default thread count, and peak memory.

    VENV/bin/python bench/forward_torch.py MODEL.h5 [seconds per row]

bench/run.sh runs it beside raspc's bench_forward on the same file. The decoded outputs of
the first batch are checked against the numpy forward (examples/python/forward.py), so a
fast wrong forward cannot pass.
"""
import os
import random
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import forward  # noqa: E402


class TorchModel(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m
        self.w = {k: torch.from_numpy(v) for k, v in m.w.items()}
        self.scale = 1.0 / (m.d_head ** 0.5) if m.d_head > 0 else 1.0

    def logits(self, tok, lens):
        m, w = self.m, self.w
        B, T = tok.shape
        x = w["embed.W_E"][tok] + w["pos_embed.W_pos"][:T][None]
        key_ok = torch.arange(T)[None, :] < lens[:, None]
        mask = key_ok[:, None, None, :].expand(B, 1, T, T)
        if m.causal:
            mask = mask & torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        for l in range(m.n_layers):
            p = f"blocks.{l}.attn."
            if m.n_heads > 0 and w[p + "W_Q"].shape[0] > 0:
                q = torch.einsum("btd,hde->bhte", x, w[p + "W_Q"]) + w[p + "b_Q"][None, :, None, :]
                k = torch.einsum("btd,hde->bhte", x, w[p + "W_K"]) + w[p + "b_K"][None, :, None, :]
                v = torch.einsum("btd,hde->bhte", x, w[p + "W_V"]) + w[p + "b_V"][None, :, None, :]
                s = (q @ k.transpose(-1, -2)) * self.scale
                a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
                x = x + torch.einsum("bhte,hed->btd", a @ v, w[p + "W_O"])
            x = x + w[p + "b_O"]
            p = f"blocks.{l}.mlp."
            x = x + torch.relu(x @ w[p + "W_in"] + w[p + "b_in"]) @ w[p + "W_out"] + w[p + "b_out"]
        return x @ w["unembed.W_U"] + w["unembed.b_U"]


def main():
    path = sys.argv[1]
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    m = forward.load(path)
    tm = TorchModel(m)
    vocab = [t for i, t in enumerate(m.vocab) if i not in (m.bos_id, m.pad_id)]
    n = m.n_ctx - 1
    rng = random.Random(1)
    default_threads = torch.get_num_threads()
    with torch.inference_mode():
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            for batch_size in (1, 256):
                batch = [[rng.choice(vocab) for _ in range(n)] for _ in range(batch_size)]
                tok = torch.tensor([forward.encode(m, s) for s in batch])
                lens = torch.full((batch_size,), n + 1)
                lg = tm.logits(tok, lens).numpy()
                want = forward.forward_batch(m, batch[:4])
                got = [[forward.decode(m, lg[b, p]) for p in range(1, n + 1)] for b in range(min(4, batch_size))]
                if got != want:
                    print(f"PyTorch forward disagrees with the numpy forward at batch {batch_size}", file=sys.stderr)
                    return 1
                seqs, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < budget:
                    tm.logits(tok, lens)
                    seqs += batch_size
                print(f"PyTorch {torch.__version__} (f32, {torch.get_num_threads()} threads) batch {batch_size:>3}: "
                      f"{seqs / (time.perf_counter() - t0):>10.0f} sequences/s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"PyTorch peak resident memory: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

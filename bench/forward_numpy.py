#!/usr/bin/python3
"""Throughput of the numpy forward (examples/python/forward.py) on a compiled model:
sequences per second at batch 1 and 256 on random full-length inputs."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import forward  # noqa: E402


def main():
    path = sys.argv[1]
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    m = forward.load(path)
    vocab = [t for i, t in enumerate(m.vocab) if i not in (m.bos_id, m.pad_id)]
    n = m.n_ctx - 1
    rng = random.Random(1)
    for batch_size in (1, 256):
        batch = [[rng.choice(vocab) for _ in range(n)] for _ in range(batch_size)]
        forward.forward_batch(m, batch)
        seqs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget:
            forward.forward_batch(m, batch)
            seqs += batch_size
        print(f"numpy forward (f32) batch {batch_size:>3}: {seqs / (time.perf_counter() - t0):>10.0f} sequences/s")


if __name__ == "__main__":
    main()

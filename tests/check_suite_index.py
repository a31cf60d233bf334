#!/usr/bin/env python3
"""Checks a built suite's index.json (suite_build_test): at least MIN models, every one
built, exact against the interpreter, every checked node passing its interventions, and
the rotated variant measured; prints the totals."""
import json
import sys

index_path, minimum = sys.argv[1], int(sys.argv[2])
models = json.load(open(index_path, encoding="utf-8"))["models"]
bad = [m["name"] for m in models
       if m["status"] != "ok" or not m["exact"] or m["nodes_checked"] < 1 or m["nodes_passed"] != m["nodes_checked"]]
if len(models) < minimum or bad:
    sys.exit(f"{index_path}: {len(models)} models (at least {minimum} expected); failing: {', '.join(bad) or 'none'}")
print(f"{len(models)} models exact; {sum(m['nodes_passed'] for m in models)} nodes pass their interventions; "
      f"{sum(m['edges_necessary'] for m in models)}/{sum(m['edges'] for m in models)} edges necessary; "
      f"rotated exact {sum(m['rotated_exact'] for m in models)}, compressed exact {sum(m['compressed_exact'] for m in models)}")

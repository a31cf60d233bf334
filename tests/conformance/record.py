#!/usr/bin/env python3
"""Record what the ORIGINAL RASP interpreter (tech-srl/RASP) prints for every conformance input.

Run by hand, never in CI (CI has no copy of the original):

    python3 tests/conformance/record.py --original /tmp/RASP

For each input file (original/tests/in/*.txt and probes/*.txt) this starts the original the
way a user does -- `python3 -m RASP_support`-style REPL reading the file on stdin, with the
working directory at original/ (which mirrors the original's layout, so its `load`s and its
own `load "RASP_support/rasplib"` resolve) -- and writes recorded/<name>.json.

Rather than parsing the coloured text the original prints, the child process wraps the
REPL's printing entry points (print_result and the error prints) and records the values
themselves, per statement, with the input lines the statement consumed.  Nothing of the
original is copied here: the child imports it from --original.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGINAL_DATA = os.path.join(HERE, "original")

# The child: imports the original REPL, wraps its printing, runs it on stdin, and writes one
# JSON document to the path given in argv[1].
CHILD = r'''
import json, sys, types

out_path = sys.argv[1]

# The original imports termcolor for colours only; replace it so any termcolor version (or
# none) works and no escape codes reach the captured text.
tc = types.ModuleType("termcolor")
tc.colored = lambda s, *a, **k: s if isinstance(s, str) else str(s)
sys.modules["termcolor"] = tc

import importlib
R = importlib.import_module("RASP_support.REPL")
from RASP_support.FunctionalSupport import UnfinishedSequence, UnfinishedSelect, Unfinished
from RASP_support.Evaluator import NamedVal, JustVal, RASPFunction
from RASP_support.Support import Select, Sequence, lazy_type_check

statements = []
current = None
line_no = 0
capturing = False
real_print = print


def new_statement():
    global current
    current = {"line": None, "end_line": None, "results": []}
    statements.append(current)


def stdin_input(prompt=""):
    # The REPL reads each input line with input(); count them so every result can be tied
    # to the lines of the statement that printed it.
    global line_no
    s = sys.stdin.readline()
    if not s:
        raise EOFError
    line_no += 1
    if current is not None:
        if current["line"] is None and s.strip() and not s.strip().startswith("#"):
            current["line"] = line_no
        current["end_line"] = line_no
    return s.rstrip("\n")


R.input = stdin_input


def add(r):
    if capturing and current is not None:
        current["results"].append(r)


def captured_print(*a, **kw):
    # Every print left in the REPL module once print_result is replaced is an error report
    # (ignoring input, antlr exception, failed evaluation, something went wrong), except
    # the banner and the empty line printed at end of input.
    text = (kw.get("sep", " ")).join(str(x) for x in a).strip()
    if capturing and text:
        add({"kind": "error", "message": text})
    elif not capturing:
        real_print(*a, **kw)


R.print = captured_print


def seq_type(vals):
    return {"bool": "bools", "string": "strings", "int": "ints",
            "float": "floats"}.get(lazy_type_check(vals), "mixed")


def host(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [host(x) for x in v]
    if isinstance(v, dict):
        return {str(k): host(x) for k, x in v.items()}
    if isinstance(v, Unfinished):
        return {"unfinished": v.name}
    if isinstance(v, RASPFunction):
        return {"function": v.name, "params": list(v.argnames)}
    return {"python": str(v)}


def example_list(ex):
    return [host(x) for x in ex]


def record_named(repl, name, val):
    if name is None and isinstance(val, Unfinished):
        name = val.name
    if isinstance(val, UnfinishedSequence):
        r = {"name": name, "kind": "sop"}
        if repl.show_sequence_examples:
            ex = repl.sequence_running_example
            vals = val.call(ex).get_vals()
            r.update(example=example_list(ex), value=[host(x) for x in vals],
                     type=seq_type(vals))
        add(r)
    elif isinstance(val, UnfinishedSelect):
        r = {"name": name, "kind": "selector"}
        if repl.show_selector_examples:
            ex = repl.selector_running_example
            m = val.call(ex).get_vals()
            r.update(example=example_list(ex),
                     value=[[1 if b else 0 for b in m[i]] for i in range(len(m))])
        add(r)
    elif isinstance(val, RASPFunction):
        add({"name": name, "kind": "function", "params": list(val.argnames)})
    else:
        add({"name": name, "kind": "value", "value": host(val)})


def print_result(self, rp):
    if self.silent:
        return
    if isinstance(rp, R.LazyPrint):
        return rp.print()
    if isinstance(rp, list):
        for v in rp:
            self.print_result(v)
        return
    if not rp.print:
        return
    res = rp.res
    if isinstance(res, NamedVal):
        record_named(self, res.name, res.val)
    elif isinstance(res, R.ReturnExample):
        add({"name": None, "kind": "example",
             "value": example_list(self.sequence_running_example)})
    elif isinstance(res, JustVal):
        v = res.val
        if v is None:
            return
        if isinstance(v, Select):
            m = v.get_vals()
            # `x("abc")`: a selector or s-op applied to an input, a finished value
            add({"name": None, "kind": "selector", "applied": True,
                 "example": example_list(v.created_from_input),
                 "value": [[1 if b else 0 for b in m[i]] for i in range(len(m))]})
        elif isinstance(v, Sequence):
            vals = v.get_vals()
            add({"name": None, "kind": "sop", "applied": True,
                 "example": example_list(getattr(v, "created_from_input", [])),
                 "value": [host(x) for x in vals], "type": seq_type(vals)})
        else:
            add({"name": None, "kind": "value", "value": host(v)})


R.REPL.print_result = print_result

real_get_tree = R.REPL.get_tree


def get_tree(self, fromfile=None):
    # Top-level reads (fromfile None) start a new statement; file loads read from a file.
    if fromfile is None:
        new_statement()
    return real_get_tree(self, fromfile)


R.REPL.get_tree = get_tree

repl = R.REPL()  # loads rasplib silently
capturing = True
try:
    repl.run()
finally:
    capturing = False
    kept = [s for s in statements if s["line"] is not None or s["results"]]
    for s in kept:
        if s["line"] is None:  # a statement made only of blank/comment lines
            s["line"] = s["end_line"]
    with open(out_path, "w") as f:
        json.dump({"statements": kept}, f, indent=1)
'''


def inputs():
    """(name, path) of every input: the original's tests/in files, then our probes."""
    res = []
    tin = os.path.join(ORIGINAL_DATA, "tests", "in")
    for f in sorted(os.listdir(tin)):
        if f.endswith(".txt"):
            res.append(("in_" + f[:-4], os.path.join(tin, f)))
    pdir = os.path.join(HERE, "probes")
    for f in sorted(os.listdir(pdir)):
        if f.endswith(".txt"):
            res.append(("probe_" + f[:-4], os.path.join(pdir, f)))
    return res


def record(original, name, path, outdir, python):
    tmp = os.path.join(outdir, "." + name + ".json.tmp")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(original)
    with open(path) as stdin:
        p = subprocess.run([python, "-c", CHILD, tmp], stdin=stdin, cwd=ORIGINAL_DATA, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=600)
    if p.returncode != 0 or not os.path.exists(tmp):
        sys.exit("record.py: the original failed on %s (rc %d):\n%s" % (path, p.returncode,
                                                                        p.stderr[-3000:]))
    with open(tmp) as f:
        doc = json.load(f)
    doc = {"input": os.path.relpath(path, HERE), "original_commit": "61dde62",
           "statements": doc["statements"]}
    final = os.path.join(outdir, name + ".json")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, final)  # atomic: a reader never sees half a recording
    n = sum(len(s["results"]) for s in doc["statements"])
    print("recorded %-40s %4d statements %5d results" % (name, len(doc["statements"]), n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--original", required=True,
                    help="checkout of tech-srl/RASP (the directory holding RASP_support/)")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="python with antlr4 (Debian: python3-antlr4)")
    ap.add_argument("--only", action="append", default=[],
                    help="record only these names (e.g. in_indexing, probe_rasplib)")
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.original, "RASP_support")):
        sys.exit("record.py: no RASP_support/ under " + args.original)
    outdir = os.path.join(HERE, "recorded")
    os.makedirs(outdir, exist_ok=True)
    for name, path in inputs():
        if args.only and name not in args.only:
            continue
        record(args.original, name, path, outdir, args.python)


if __name__ == "__main__":
    main()

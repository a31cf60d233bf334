#!/usr/bin/env python3
"""Conformance of raspc against the original RASP interpreter (tech-srl/RASP, 61dde62).

    /usr/bin/python3 tests/conformance/run.py --raspc build/tools/raspc [--json] [--only NAME]

Feeds every input the recorder ran through the original (original/tests/in/*.txt and
probes/*.txt) to `raspc repl --json --tokens-as-strings`, on stdin, with the working directory at original/ as
the recorder did, and compares each value the original printed (recorded/<name>.json) with
the value raspc reports for the statement that ends on the same input line (results pair
by name, then in order: names are labels, not compared).

What counts as one compared value (see README.md for the reasons):
  - each result the original printed: an s-op (its values on the running example), a
    selector (its 0/1 matrix), a host value, a function (its parameters), or an error (only
    that raspc reports an error for that statement, not its text);
  - each statement the original ran silently (`set example`, `load` of a file without
    printouts, a `for` loop...): raspc must not report an error for it.
Numbers compare with their type, as the original prints them: 1 and 1.0 differ, True and 1
differ; floats equal within 1e-9 (relative).

Exits 1 when fewer than 98% of the values are equal, when a difference is not listed in
known_differences.txt, when a listed difference no longer differs (to keep the list true), or
when raspc crashes; 0 otherwise.  Standard library only.
"""
import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGINAL_DATA = os.path.join(HERE, "original")
RECORDED = os.path.join(HERE, "recorded")
KNOWN = os.path.join(HERE, "known_differences.txt")
THRESHOLD = 98.0


# ---------------------------------------------------------------- value comparison

def same(a, b):
    """Typed equality: the original prints 1 and 1.0 (and True and 1) differently."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and "unfinished" in a:
        # An s-op or selector inside a container: the original records its internal name,
        # raspc its kind; only the kind is comparable.
        return isinstance(b, dict) and b.get("kind") in ("sop", "selector")
    if isinstance(a, dict) and "function" in a:
        return isinstance(b, dict) and b.get("kind") == "function" and b.get("params") == a.get("params")
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return (sorted(a) == sorted(b)) and all(same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


def same_example(a, b):
    # The example is context, not a result: compare it as printed text so that a typed-token
    # difference shows up once, in the values, rather than in every example too.
    if a is None or b is None:
        return True
    return [str(x) for x in a] == [str(x) for x in b]


def compare(orig, got):
    """Why `got` (a raspc result) differs from `orig` (a recorded one), or None if equal."""
    if got is None:
        return "raspc printed no %s" % orig["kind"]
    if orig.get("applied") and got.get("kind") == "value":
        # `x("abc")` gives a finished sequence (or matrix): the original prints it as a
        # list, raspc as a host list; the values are what counts.
        v = got.get("value")
        if orig["kind"] == "selector" and isinstance(v, list):  # a matrix of booleans
            v = [[int(b) if isinstance(b, bool) else b for b in row] if isinstance(row, list)
                 else row for row in v]
        return None if same(orig["value"], v) else "value differs"
    if got.get("kind") != orig["kind"]:
        return "raspc printed a %s" % got.get("kind")
    kind = orig["kind"]
    if kind in ("sop", "selector"):
        if "value" not in orig:  # shown without an example (values loaded from a file)
            return None
        if "value" not in got:
            return "raspc printed no value"
        if not same_example(orig.get("example"), got.get("example")):
            return "example differs"
        if not same(orig["value"], got["value"]):
            return "value differs"
        return None
    if kind == "function":
        return None if orig["params"] == got.get("params") else "parameters differ"
    if kind == "value":
        return None if same(orig["value"], got.get("value")) else "value differs"
    return None


def norm_name(n):
    # An expression statement's value is named `out` by the original, null by raspc's spec.
    return None if n in (None, "out") else n


def compare_statement(orig_stmt, got_stmts):
    """[(index, orig_result, got_result_or_None, reason_or_None)] for one recorded statement.

    Non-error results pair by name, in order within a name (a `load` prints one result per
    name assigned in the file); an error the original printed is matched by any error raspc
    reports for the statement; a silent statement is matched by raspc reporting no error.
    """
    # raspc echoes `set example`/`show example` as kind "example"; the original's echo of
    # `show example` is not compared either (it is the example, not a computed value).
    got = [r for s in got_stmts for r in s.get("results", []) if r.get("kind") != "example"]
    got_errors = [r for r in got if r.get("kind") == "error"]
    results = [r for r in orig_stmt["results"] if r["kind"] != "example"]
    # Pair by name first, then the rest in order: names label values, they are not values
    # (the original names the echo of `a;` after `a`, raspc leaves it unnamed).
    free = [r for r in got if r.get("kind") != "error"]
    paired = {}
    for i, r in enumerate(results):
        if r["kind"] == "error":
            continue
        for g in free:
            if norm_name(g.get("name")) == norm_name(r.get("name")):
                paired[i] = g
                free.remove(g)
                break
    for i, r in enumerate(results):
        if r["kind"] != "error" and i not in paired and free:
            paired[i] = free.pop(0)
    out = []
    if not results:
        if not orig_stmt["results"]:
            silent = {"kind": "silent"}
            if got_errors:
                out.append((0, silent, got_errors[0], "raspc reported an error"))
            else:
                out.append((0, silent, None, None))
        return out
    for i, r in enumerate(results):
        if r["kind"] == "error":
            if got_errors:
                out.append((i, r, got_errors[0], None))
            else:
                g = got[0] if got else None
                out.append((i, r, g, "raspc reported no error"))
            continue
        g = paired.get(i)
        reason = compare(r, g)
        if g is None and got_errors:
            g, reason = got_errors[0], "raspc reported an error"
        out.append((i, r, g, reason))
    return out


# ---------------------------------------------------------------- running raspc

def run_raspc(raspc, input_path, timeout):
    """The JSON objects raspc printed, plus a note when it crashed or printed non-JSON."""
    with open(input_path, "rb") as f:
        try:
            # --tokens-as-strings: the original's REPL binds `tokens` to tokens_str; raspc
            # types tokens by the example unless asked (a documented, deliberate default).
            p = subprocess.run([raspc, "repl", "--json", "--tokens-as-strings"], stdin=f, cwd=ORIGINAL_DATA,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [], "timed out after %ds" % timeout
    objs, notes = [], []
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            o = json.loads(line)
        except ValueError:
            notes.append("non-JSON output: " + line[:120])
            continue
        if isinstance(o, dict) and "line" in o:
            objs.append(o)
        else:
            notes.append("unexpected JSON: " + line[:120])
    if p.returncode != 0 and not objs:
        notes.insert(0, "raspc exited with status %d and printed no statement: %s"
                     % (p.returncode, p.stderr.decode("utf-8", "replace")[-300:].strip()))
    crash = None
    if p.returncode < 0 or p.returncode >= 128:
        crash = "raspc crashed (status %d): %s" % (p.returncode,
                                                   p.stderr.decode("utf-8", "replace")[-300:])
    return objs, crash or ("; ".join(notes[:3]) if notes else None)


def by_line(objs):
    by_end, by_start = {}, {}
    for o in objs:
        by_end.setdefault(o.get("end_line", o.get("line")), []).append(o)
        by_start.setdefault(o.get("line"), []).append(o)
    return by_end, by_start


# ---------------------------------------------------------------- known differences

def read_known(path):
    """{key: reason}; a line is `KEY reason`, `#` starts a comment line.

    KEY is recording:line:index (one result of the statement starting on that input line) or
    recording:line:* (every result of that statement that differs, e.g. a whole `load` echo).
    """
    known, problems = {}, []
    if not os.path.exists(path):
        return known, problems
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, _, reason = line.strip().partition(" ")
            reason = reason.strip()
            if not reason or reason.upper().startswith("TODO"):
                problems.append("%s:%d: %s has no reason" % (path, n, key))
            if key in known:
                problems.append("%s:%d: %s listed twice" % (path, n, key))
            known[key] = reason
    return known, problems


def short(v, n=60):
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    s = " ".join(s.split())  # one table row per difference
    return s if len(s) <= n else s[:n - 3] + "..."


def show(r):
    if r is None:
        return "(nothing)"
    k = r.get("kind")
    if k == "error":
        return "error: " + short(r.get("message", ""), 50)
    if k == "silent":
        return "(no output)"
    if k in ("sop", "selector", "value"):
        return "%s %s" % (k, short(r.get("value", "(no example)")))
    if k == "function":
        return "function(%s)" % ", ".join(r.get("params", []))
    return short(r)


# ---------------------------------------------------------------- self-test

def self_test():
    """The comparison rules, on hand-made statements (ctest conformance_runner_test)."""
    failures = []

    def check(what, cond):
        if not cond:
            failures.append(what)

    check("1 == 1", same(1, 1))
    check("1 != 1.0", not same(1, 1.0))
    check("True != 1", not same(True, 1))
    check("0.1+0.2 == 0.3 within 1e-9", same(0.1 + 0.2, 0.3))
    check("1.0 != 1.001", not same(1.0, 1.001))
    check("None != 0", not same(None, 0))
    check("nested lists", same([[1, "a"], [2.5]], [[1, "a"], [2.5]]))
    check("list lengths", not same([1, 2], [1, 2, 3]))
    check("dicts", same({"a": [1]}, {"a": [1]}) and not same({"a": 1}, {"b": 1}))

    sop = {"name": "x", "kind": "sop", "example": ["a", "b"], "value": [1, 2], "type": "ints"}
    stmt = {"line": 1, "end_line": 1, "results": [sop]}

    def verdicts(got_results):
        return [r for _, _, _, r in compare_statement(stmt, [{"results": got_results}])]

    check("equal s-op", verdicts([dict(sop)]) == [None])
    check("unnamed s-op pairs", verdicts([dict(sop, name=None)]) == [None])
    check("floats for ints differ", verdicts([dict(sop, value=[1.0, 2.0])]) != [None])
    check("wrong value", verdicts([dict(sop, value=[1, 3])]) != [None])
    check("missing result", verdicts([]) != [None])
    check("an error for a value", verdicts([{"kind": "error", "message": "x"}]) != [None])
    check("other example", verdicts([dict(sop, example=["a", "c"])]) != [None])
    err = {"line": 1, "end_line": 1, "results": [{"kind": "error", "message": "boom"}]}
    check("any error matches an error",
          [r for *_, r in compare_statement(err, [{"results": [{"kind": "error",
                                                                "message": "other"}]}])] == [None])
    check("no error for an error",
          [r for *_, r in compare_statement(err, [{"results": []}])] != [None])
    silent = {"line": 1, "end_line": 1, "results": []}
    check("silent stays silent", [r for *_, r in compare_statement(silent, [])] == [None])
    check("error where silent", [r for *_, r in compare_statement(
        silent, [{"results": [{"kind": "error", "message": "x"}]}])] != [None])
    sel = {"line": 1, "end_line": 1, "results": [
        {"name": None, "kind": "selector", "applied": True, "value": [[1, 0], [0, 1]]}]}
    check("applied selector as booleans", [r for *_, r in compare_statement(
        sel, [{"results": [{"name": None, "kind": "value",
                            "value": [[True, False], [False, True]]}]}])] == [None])
    for f in failures:
        print("self-test FAILED: " + f)
    print("self-test: %s" % ("FAILED" if failures else "ok"))
    return 1 if failures else 0


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raspc", help="the raspc binary")
    ap.add_argument("--self-test", action="store_true",
                    help="check the comparison rules on hand-made statements, run nothing")
    ap.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    ap.add_argument("--only", action="append", default=[], help="only these recordings")
    ap.add_argument("--known", default=KNOWN, help="known-differences file")
    ap.add_argument("--all", action="store_true", help="list the known differences too")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per input file")
    ap.add_argument("--write-known", metavar="PATH",
                    help="write the differences found to PATH in known-differences form "
                         "(reasons kept from --known; new ones marked TODO), to edit by hand")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.raspc:
        ap.error("--raspc is required")
    raspc = os.path.abspath(args.raspc)

    known, problems = read_known(args.known)
    diffs, compared, equal, crashes, per_file = [], 0, 0, [], {}
    names = sorted(f[:-5] for f in os.listdir(RECORDED) if f.endswith(".json"))
    for name in names:
        if args.only and name not in args.only:
            continue
        with open(os.path.join(RECORDED, name + ".json")) as f:
            rec = json.load(f)
        input_path = os.path.join(HERE, rec["input"])
        with open(input_path, encoding="utf-8") as f:
            src = f.read().split("\n")
        objs, note = run_raspc(raspc, input_path, args.timeout)
        if note and note.startswith("raspc crashed"):
            crashes.append("%s: %s" % (name, note))
        elif note:
            problems.append("%s: %s" % (name, note))
        by_end, by_start = by_line(objs)
        fe = [0, 0]
        for st in rec["statements"]:
            got = by_end.get(st["end_line"]) or by_start.get(st["line"]) or []
            star = "%s:%d:*" % (name, st["line"])  # lists every result of the statement
            for i, o, g, reason in compare_statement(st, got):
                key = "%s:%d:%d" % (name, st["line"], i)
                if key not in known and star in known and reason is not None:
                    key = star
                compared += 1
                fe[1] += 1
                if reason is None:
                    equal += 1
                    fe[0] += 1
                    if key in known:
                        diffs.append({"key": key, "status": "fixed", "reason": known[key],
                                      "source": src[st["line"] - 1].strip(),
                                      "original": show(o), "raspc": show(g)})
                    continue
                diffs.append({"key": key, "status": "known" if key in known else "new",
                              "reason": known.get(key, reason),
                              "source": src[st["line"] - 1].strip(),
                              "original": show(o), "raspc": show(g)})
        per_file[name] = fe
    seen = {d["key"] for d in diffs}
    if not args.only:  # a `:*` entry none of whose results differ any more
        for key in known:
            if key.endswith(":*") and key not in seen:
                diffs.append({"key": key, "status": "fixed", "reason": known[key],
                              "source": "", "original": "", "raspc": ""})
                seen.add(key)
    if not args.only:  # listed keys that no longer exist at all (input edited)
        for key in known:
            if key not in seen:
                diffs.append({"key": key, "status": "gone", "reason": known[key], "source": "",
                              "original": "", "raspc": ""})
    pct = 100.0 * equal / compared if compared else 0.0
    new = [d for d in diffs if d["status"] == "new"]
    stale = [d for d in diffs if d["status"] in ("fixed", "gone")]
    ok = pct >= THRESHOLD and not new and not stale and not crashes and not problems

    if args.write_known:
        lines = ["# Differences between raspc and the original RASP interpreter (61dde62):",
                 "# KEY = recording:line-of-the-statement:result-index, then why it differs.",
                 "# run.py fails on any difference not listed here and on any listed one that",
                 "# no longer differs; see README.md."]
        written = set()
        for d in diffs:
            if d["status"] in ("new", "known") and d["key"] not in written:
                written.add(d["key"])
                r = known.get(d["key"]) or ("TODO " + d["reason"] + ": " + d["source"])
                lines.append("%s %s" % (d["key"], r))
        tmp = args.write_known + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, args.write_known)

    if args.json:
        json.dump({"equal": equal, "compared": compared, "percent": round(pct, 2),
                   "threshold": THRESHOLD, "ok": ok, "per_file": per_file,
                   "differences": diffs, "crashes": crashes, "problems": problems},
                  sys.stdout, indent=1, ensure_ascii=False)
        print()
    else:
        print("conformance: %d/%d values equal (%.1f%%)" % (equal, compared, pct))
        shown = [d for d in diffs if args.all or d["status"] != "known"]
        nknown = len(diffs) - len([d for d in diffs if d["status"] != "known"])
        if nknown:
            print("%d known difference(s), listed in %s%s" % (
                nknown, os.path.relpath(args.known), "" if args.all else " (--all shows them)"))
        if shown:
            print("%-36s %-6s %-34s %-30s %s" % ("statement", "status", "source", "original",
                                                 "raspc"))
            for d in shown:
                print("%-36s %-6s %-34s %-30s %s" % (d["key"], d["status"], short(d["source"], 34),
                                                     short(d["original"], 30), d["raspc"]))
                if d["status"] == "known":
                    print("%44s%s" % ("", d["reason"]))
        for c in crashes:
            print("CRASH " + c)
        for p in problems:
            print("PROBLEM " + p)
        if pct < THRESHOLD:
            print("FAIL: below %.0f%% of values equal" % THRESHOLD)
        if new:
            print("FAIL: %d new difference(s), not in %s" % (len(new), args.known))
        if stale:
            print("FAIL: %d listed difference(s) no longer differ: remove them from %s"
                  % (len(stale), args.known))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

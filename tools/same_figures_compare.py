"""Compares two output folders of tools/same_figures.sh: quickstart metrics, the final training
metrics of each run, export parity and size, and the accuracy columns of tools/bench_export.py.
Prints every difference (none: the same commands gave the same figures).

    .venv/bin/python tools/same_figures_compare.py /tmp/cmp/base /tmp/cmp/new
"""
import json
import sys
B, N = sys.argv[1], sys.argv[2]
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        line=line.strip()
        if line.startswith("{"):
            return json.loads(line)
def cmp_dict(name, a, b):
    keys = sorted(set(a) | set(b))
    diffs = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) or isinstance(vb, dict):
            diffs += cmp_dict(f"{name}.{k}", va or {}, vb or {})
        elif va != vb:
            diffs.append((f"{name}.{k}", va, vb))
    return diffs
out = []
qa = json.load(open(f"{B}/qs/metrics.json")); qb = json.load(open(f"{N}/qs/metrics.json"))
out += cmp_dict("quickstart", qa, qb)
for run in ("agrol", "mmvq", "mm"):
    a, b = last_json(f"{B}/{run}.log"), last_json(f"{N}/{run}.log")
    a.pop("workdir"); b.pop("workdir")
    a = {k: v for k, v in a.items() if "steps_per_sec" not in k}; b = {k: v for k, v in b.items() if "steps_per_sec" not in k}
    out += cmp_dict(run, a, b)
for e in ("agrol", "mem", "mm"):
    a, b = last_json(f"{B}/export_{e}.log"), last_json(f"{N}/export_{e}.log")
    for k in ("file_bytes", "parity_max_abs_vs_jax"):
        if a[k] != b[k]:
            out.append((f"export_{e}.{k}", a[k], b[k]))
def table(path):
    rows = [l for l in open(path).read().splitlines() if l.startswith("| ") and "---" not in l]
    res = {}
    for r in rows[1:]:
        c = [x.strip() for x in r.strip("|").split("|")]
        if len(c) < 9: continue
        res[(c[0], c[1])] = (c[3], c[6], c[7], c[9] if len(c) > 9 else "")
    return res
ta, tb = table(f"{B}/bench_export.log"), table(f"{N}/bench_export.log")
for k in ta:
    if ta[k] != tb.get(k):
        out.append((f"bench_export {k} (file MB, MPJPE, jitter, diff)", ta[k], tb.get(k)))
print(f"{len(out)} differences")
for d in out: print(d)
print("quickstart all:", qb["Mem-MLP (quickstart)"]["all"]["mpjpe_cm"] if "Mem-MLP (quickstart)" in qb else qb)

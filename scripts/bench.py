#!/usr/bin/env python3
"""Side-by-side CPU benchmark: embtune vs Python sentence-transformers on the same machine.

Run through scripts/bench.sh (which sets up the venv, the model and the release binary first);
this driver uses the standard library only and runs under the system python3.

For each job the two systems run as separate processes, interleaved (embtune, ST, embtune, ST, …)
for --rounds rounds; the report uses medians. Each process's peak RSS is ru_maxrss from os.wait4
on its pid. Threads: RAYON_NUM_THREADS=T for embtune (its whole compute pool) and `--threads T`
(torch.set_num_threads) for Python; RAYON_NUM_THREADS=T is also set for Python, where it only
caps the tokenizers' pool. OMP_NUM_THREADS is left as found (normally unset: torch's default).
HF_HUB_OFFLINE=1 on both sides.

Jobs (all-MiniLM-L6-v2 unless named; --models minilm,mpnet picks the models, --only the jobs):
  matmul        f32 2048×2048 product GFLOP/s on each side: the hardware yardstick
  encode-b32    the 2,551 unique STS-B test sentences, normalized, batch 32: sentences/s
  encode-b128   the same at batch 128
  train-cosent  STS-B train, CoSENT, batch 16: pairs/s of --train-steps timed steps (after 3
                warm-up steps on both sides), the real training loop (dropout, AdamW)
  train-mnrl    STS-B train, MultipleNegativesRanking, batch 32
  cold          wall time from launch to exit of embedding one sentence into .npy (process start,
                imports, model load, encode, write); --cold-rounds rounds
  mpnet-encode-b32        all-mpnet-base-v2 (both sides get --model): encode-b32's job
  mpnet-train-cosent-b16  all-mpnet-base-v2: train-cosent's job, --mpnet-train-steps timed steps
                The target of mpnet-encode is MiniLM's ratio for the same job in the same run;
                mpnet-train's is 1.8×. Other targets: encode ≥ 1.5×, train ≥ 2.0×, peak RSS
                encode ≤ 0.3×, train ≤ 0.5× (the packing issue's). --no-packing: embtune pads.

Writes results/bench-cpu.json (every run, medians, FLOP accounting per model, machine, versions;
--output) and the section between <!-- bench-cpu:start --> and <!-- bench-cpu:end --> of
BENCHMARKS.md (--markdown; added after the intro paragraph when absent; the rest of the file is
kept). `--render results/bench-cpu.json` rewrites only that section from an earlier run. Exit
status 1 when a run fails (its stderr tail is printed; the JSON is still written, BENCHMARKS.md is
not); missed targets are not failures.
"""

import argparse
import ast
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
TEST = "data/stsbenchmark/sts-test.csv"
TRAIN = "data/stsbenchmark/sts-train.csv"
COLD_TEXT = "A man is playing a guitar."

# FLOP model of all-MiniLM-L6-v2 (BERT: 6 layers, hidden 384, intermediate 1536). Matrix-product
# parameters per layer: Q, K, V, attention output (4·H²) and the two FFN matrices (2·H·I).
LAYERS, HIDDEN, INTERMEDIATE = 6, 384, 1536
MATMUL_PARAMS_PER_LAYER = 4 * HIDDEN**2 + 2 * HIDDEN * INTERMEDIATE  # 1,769,472
MATMUL_PARAMS = LAYERS * MATMUL_PARAMS_PER_LAYER  # 10,616,832

# The models --models selects, with the same FLOP model per model (MiniLM's numbers are the
# constants above). all-mpnet-base-v2: MPNet, 12 layers, hidden 768, intermediate 3072.
FLOP_MODELS = {
    "minilm": {"model": MODEL, "family": "BERT", "layers": LAYERS, "hidden": HIDDEN, "intermediate": INTERMEDIATE},
    "mpnet": {"model": MPNET, "family": "MPNet", "layers": 12, "hidden": 768, "intermediate": 3072},
}
for _fm in FLOP_MODELS.values():
    _fm["matmul_params_per_layer"] = 4 * _fm["hidden"] ** 2 + 2 * _fm["hidden"] * _fm["intermediate"]
    _fm["matmul_params"] = _fm["layers"] * _fm["matmul_params_per_layer"]  # mpnet: 84,934,656
assert FLOP_MODELS["minilm"]["matmul_params"] == MATMUL_PARAMS


def model_title(key):
    """all-MiniLM-L6-v2, all-mpnet-base-v2 (the name without its owner)."""
    return FLOP_MODELS[key]["model"].split("/")[-1]

BUILD_INPUTS = ("src", "kernels", "build.rs", "Cargo.toml", "Cargo.lock")

START, END = "<!-- bench-cpu:start -->", "<!-- bench-cpu:end -->"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def run_process(argv, env, timeout_s):
    """Runs argv to completion; wall time (launch → reaped), exit code, peak RSS, CPU time."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        timer = threading.Timer(timeout_s, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return {
        "rc": p.returncode,
        "wall_s": wall,
        "peak_rss_mib": ru.ru_maxrss / 1024.0,  # Linux: KiB
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "timed_out": p.returncode == -9 and wall >= timeout_s,
        "stdout": stdout,
        "stderr": stderr,
    }


def last_json(stdout):
    """The last stdout line that is a JSON object with a "job" key (Python's Trainer may print
    its own dict lines before it)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "job" in obj:
                return obj
    return None


def tail(text, n=3000):
    return text[-n:] if len(text) > n else text


def capture(argv, env=None):
    try:
        r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------
# Machine and versions


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def sha256(path):
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def machine_info():
    cpuinfo = read("/proc/cpuinfo") or ""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = val.strip()
        elif key == "flags" and not flags:
            flags = set(val.split())
    mem = {}
    for line in (read("/proc/meminfo") or "").splitlines():
        key, _, val = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            mem[key] = int(val.split()[0]) / 1024**2  # GiB
    return {
        "cpu_model": model,
        "flags": {f: f in flags for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "avx2", "fma")},
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cgroup_cpu_max": (read("/sys/fs/cgroup/cpu.max") or "").strip() or None,
        "mem_total_gib": round(mem.get("MemTotal", 0), 2),
        "mem_available_gib": round(mem.get("MemAvailable", 0), 2),
        "kernel": platform.release(),
        "system_python": platform.python_version(),
    }


PY_PROBE = r"""
import json, platform, torch, sentence_transformers, transformers, tokenizers, numpy
print(json.dumps({
    "python": platform.python_version(),
    "torch": torch.__version__,
    "sentence_transformers": sentence_transformers.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "numpy": numpy.__version__,
    "torch_default_threads": torch.get_num_threads(),
    "torch_interop_threads": torch.get_num_interop_threads(),
    "torch_openmp": torch.backends.openmp.is_available(),
    "torch_mkl": torch.backends.mkl.is_available(),
    "torch_mkldnn": torch.backends.mkldnn.is_available(),
    "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "torch_parallel_info": torch.__config__.parallel_info(),
}))
"""


def python_versions(python, env):
    out = capture([python, "-c", PY_PROBE], env=env)
    try:
        return json.loads(out.splitlines()[-1]) if out else None
    except ValueError:
        return None


def embtune_info(binary):
    # Uncommitted changes to what the binary is built from (not scripts or docs).
    status = capture(["git", "status", "--porcelain", "--"] + [x for x in BUILD_INPUTS if os.path.exists(os.path.join(ROOT, x))])
    st = os.stat(binary) if os.path.exists(binary) else None
    return {
        "binary": os.path.relpath(binary, ROOT),
        "version": capture([binary, "--version"]),
        "git_commit": capture(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(status) if status is not None else None,
        "git_dirty_files": status.splitlines() if status else [],
        "binary_sha256": sha256(binary),
        "binary_mtime": datetime.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds") if st else None,
        "rustc": capture(["rustc", "--version"]),
    }


# ---------------------------------------------------------------------------------------------
# .npy (cold start outputs: do the two embeddings agree?)


def read_npy_f32(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not .npy")
    if data[6] == 1:
        hlen, off = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, off = struct.unpack("<I", data[8:12])[0], 12
    header = ast.literal_eval(data[off : off + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError(f"unsupported .npy header {header}")
    n = math.prod(header["shape"])
    return list(header["shape"]), struct.unpack(f"<{n}f", data[off + hlen : off + hlen + 4 * n])


def compare_npy(a_path, b_path):
    try:
        sa, a = read_npy_f32(a_path)
        sb, b = read_npy_f32(b_path)
    except (OSError, ValueError, KeyError, struct.error) as e:
        return {"error": str(e)}
    if sa != sb:
        return {"shapes": [sa, sb]}
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return {"shape": sa, "max_abs_diff": max(abs(x - y) for x, y in zip(a, b)), "cosine": dot / (na * nb)}


# ---------------------------------------------------------------------------------------------
# Jobs


def define_jobs(a, scratch):
    emb = [a.embtune]
    st = [a.python, os.path.join(ROOT, "scripts", "bench_st.py")]
    t = ["--threads", str(a.threads)]
    # --no-packing: embtune's encode and train jobs pad every batch (the comparison run).
    npk = ["--no-packing"] if a.no_packing else []
    m = ["-m", MODEL, "--device", "cpu"]
    steps = str(a.train_steps)
    # "model": the FLOP_MODELS key a job measures (None: the matmul yardstick, no model).
    jobs = [
        {
            "id": "matmul",
            "title": f"matmul yardstick n={a.matmul_n}",
            "kind": "matmul",
            "model": None,
            "metric": "gflops",
            "unit": "GFLOP/s",
            "embtune": emb + ["bench", "matmul"] + m + ["--n", str(a.matmul_n)],
            "st": st + ["matmul", "--n", str(a.matmul_n)] + t,
        }
    ]
    for b in (32, 128):
        jobs.append(
            {
                "id": f"encode-b{b}",
                "title": f"encode b{b}",
                "kind": "encode",
                "model": "minilm",
                "batch_size": b,
                "metric": "sentences_per_sec",
                "unit": "sentences/s",
                "embtune": emb + ["bench", "encode"] + m + npk + ["-d", TEST, "-b", str(b)],
                "st": st + ["encode", "--data", TEST, "-b", str(b)] + t,
            }
        )
    for loss, b in (("cosent", 16), ("mnrl", 32)):
        jobs.append(
            {
                "id": f"train-{loss}-b{b}",
                "title": f"train {'CoSENT' if loss == 'cosent' else 'MNRL'} b{b}",
                "kind": "train",
                "model": "minilm",
                "batch_size": b,
                "loss": loss,
                "metric": "pairs_per_sec",
                "unit": "pairs/s",
                "embtune": emb + ["bench", "train"] + m + npk
                + ["-d", TRAIN, "--loss", loss, "-b", str(b), "--steps", steps],
                "st": st + ["train", "--data", TRAIN, "--loss", loss, "-b", str(b), "--steps", steps]
                + t + ["--scratch", scratch],
            }
        )
    one = os.path.join(scratch, "one.txt")
    with open(one, "w", encoding="utf-8") as f:
        f.write(COLD_TEXT + "\n")
    jobs.append(
        {
            "id": "cold",
            "title": "cold start, 1 sentence",
            "kind": "cold",
            "model": "minilm",
            "metric": "wall_s",
            "unit": "s",
            "rounds": a.cold_rounds,
            "outputs": {"embtune": os.path.join(scratch, "cold-embtune.npy"), "st": os.path.join(scratch, "cold-st.npy")},
            "embtune": emb + ["embed"] + m + ["-i", one, "-o", os.path.join(scratch, "cold-embtune.npy")],
            "st": st + ["cold", "--text", COLD_TEXT, "--output", os.path.join(scratch, "cold-st.npy")],
        }
    )
    # all-mpnet-base-v2: the same jobs as encode-b32 and train-cosent-b16, `--model` on both
    # sides; "target_ref" is the MiniLM job whose ratio is the row's target.
    mp, mpt, mps = ["-m", MPNET, "--device", "cpu"], model_title("mpnet"), str(a.mpnet_train_steps)
    jobs.append(
        {
            "id": "mpnet-encode-b32",
            "title": f"{mpt} encode b32",
            "kind": "encode",
            "model": "mpnet",
            "target_ref": "encode-b32",
            "batch_size": 32,
            "metric": "sentences_per_sec",
            "unit": "sentences/s",
            "embtune": emb + ["bench", "encode"] + mp + npk + ["-d", TEST, "-b", "32"],
            "st": st + ["encode", "--model", MPNET, "--data", TEST, "-b", "32"] + t,
        }
    )
    jobs.append(
        {
            "id": "mpnet-train-cosent-b16",
            "title": f"{mpt} train CoSENT b16",
            "kind": "train",
            "model": "mpnet",
            "target": 1.8,
            "batch_size": 16,
            "loss": "cosent",
            "metric": "pairs_per_sec",
            "unit": "pairs/s",
            "embtune": emb + ["bench", "train"] + mp + npk + ["-d", TRAIN, "--loss", "cosent", "-b", "16", "--steps", mps],
            "st": st + ["train", "--model", MPNET, "--data", TRAIN, "--loss", "cosent", "-b", "16", "--steps", mps]
            + t + ["--scratch", scratch],
        }
    )
    ids, kinds = {j["id"] for j in jobs}, {j["kind"] for j in jobs}
    models = a.models
    if a.only:
        want = set(x for x in a.only.split(",") if x)
        unknown = want - ids - kinds
        if unknown:
            raise SystemExit(f"bench: unknown job(s) {sorted(unknown)}; jobs: {[j['id'] for j in jobs]}")
        excluded = sorted(j["id"] for j in jobs if j["id"] in want and j["model"] not in (None, *models))
        if excluded:
            raise SystemExit(f"bench: --only {','.join(excluded)} needs its model in --models (now {','.join(models)})")
        jobs = [j for j in jobs if j["id"] in want or j["kind"] in want]
    jobs = [j for j in jobs if j["model"] is None or j["model"] in models]
    if not jobs:
        raise SystemExit(f"bench: no job left (--only {a.only}, --models {','.join(models)})")
    return jobs


# The packing issue's targets (ratios embtune / sentence-transformers): throughput at least,
# peak RSS at most; a job's own "target" (all-mpnet-base-v2 training: 1.8×) replaces the first.
SPEED_TARGET = {"encode": 1.5, "train": 2.0}
RSS_TARGET = {"encode": 0.3, "train": 0.5}

SYSTEMS = ("embtune", "st")
NAMES = {"embtune": "embtune", "st": "sentence-transformers"}


def run_job(job, a, envs, failures):
    rounds = job.get("rounds", a.rounds)
    runs = {s: [] for s in SYSTEMS}
    failed = set()
    for r in range(rounds):
        for s in SYSTEMS:
            if s in failed:
                continue
            out = job.get("outputs", {}).get(s)
            if out and os.path.exists(out):
                os.remove(out)
            load = os.getloadavg()[0]
            p = run_process(job[s], envs[s], a.timeout)
            rec = {
                "round": r + 1,
                "rc": p["rc"],
                "wall_s": p["wall_s"],
                "peak_rss_mib": p["peak_rss_mib"],
                "cpu_s": p["cpu_s"],
                "loadavg_1m_before": load,
            }
            result = None
            if p["rc"] == 0:
                if job["kind"] == "cold":
                    result = {"job": "cold", "wall_s": p["wall_s"]} if out and os.path.exists(out) else None
                else:
                    result = last_json(p["stdout"])
            if result is None:
                why = "timed out" if p["timed_out"] else f"exit {p['rc']}" if p["rc"] else "no result"
                failures.append(
                    {"job": job["id"], "system": s, "round": r + 1, "why": why, "stderr_tail": tail(p["stderr"]),
                     "stdout_tail": tail(p["stdout"], 1000), "command": shlex.join(job[s])}
                )
                log(f"[{job['id']} {r + 1}/{rounds}] {NAMES[s]} FAILED ({why}): {shlex.join(job[s])}")
                sys.stderr.write(tail(p["stderr"]) + "\n")
                failed.add(s)
                continue
            rec["result"] = result
            runs[s].append(rec)
            value = result.get(job["metric"], p["wall_s"])
            log(
                f"[{job['id']} {r + 1}/{rounds}] {NAMES[s]:>21}: {value:9.2f} {job['unit']}, "
                f"peak RSS {p['peak_rss_mib']:.0f} MiB, {p['wall_s']:.1f} s wall, {p['cpu_s']:.1f} s CPU"
            )
        if job["kind"] == "cold" and r == 0 and not failed:
            job["agreement"] = compare_npy(job["outputs"]["embtune"], job["outputs"]["st"])
    return runs


def median_of(runs, key):
    vals = [x[key] if key in x else x["result"].get(key) for x in runs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------------------------------------
# Report


def fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("sentences/s", "MiB"):
        return f"{v:,.0f}"
    if unit in ("pairs/s", "GFLOP/s"):
        return f"{v:,.1f}"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:.3g}"


def summarize(jobs, runs_by_job, tokens_by_model, a):
    """Medians, ratios, FLOP rates and target rows. tokens_by_model: bench_st.py tokens output per
    FLOP_MODELS key (None or absent where it was not counted)."""
    out, rows = {}, []
    for job in jobs:
        runs = runs_by_job[job["id"]]
        key = job.get("model")
        tokens = tokens_by_model.get(key) if key else None
        fmod = FLOP_MODELS[key] if key else None
        med = {}
        for s in SYSTEMS:
            if not runs[s]:
                med[s] = None
                continue
            med[s] = {
                "value": median_of(runs[s], "wall_s") if job["kind"] == "cold" else median_of(runs[s], job["metric"]),
                "peak_rss_mib": median_of(runs[s], "peak_rss_mib"),
                "wall_s": median_of(runs[s], "wall_s"),
                "seconds": median_of(runs[s], "seconds"),
                "cpu_s": median_of(runs[s], "cpu_s"),
                "runs": len(runs[s]),
            }
        e, p = med["embtune"], med["st"]
        entry = {
            "title": job["title"],
            "kind": job["kind"],
            "metric": job["metric"],
            "unit": job["unit"],
            "commands": {s: shlex.join(job[s]) for s in SYSTEMS},
            "runs": runs,
            "median": med,
            "ratio": e["value"] / p["value"] if e and p and p["value"] else None,
            "rss_ratio": e["peak_rss_mib"] / p["peak_rss_mib"] if e and p and p["peak_rss_mib"] else None,
        }
        if key:
            entry["model"] = key
            entry["model_name"] = fmod["model"]
        if job.get("target_ref"):
            entry["target_ref"] = job["target_ref"]
        if job.get("target"):
            entry["target"] = job["target"]
        # The family and execution path embtune reported (encode and train results carry them).
        paths = sorted({(r["result"].get("family"), r["result"].get("exec"), r["result"].get("packed"))
                        for r in runs["embtune"] if r["result"].get("exec") is not None}, key=str)
        if paths:
            entry["embtune_family"] = paths[0][0] if len(paths) == 1 else [x[0] for x in paths]
            entry["embtune_exec"] = paths[0][1] if len(paths) == 1 else [x[1] for x in paths]
            entry["embtune_packed"] = paths[0][2] if len(paths) == 1 else [x[2] for x in paths]
        if "agreement" in job:
            entry["embedding_agreement"] = job["agreement"]
        # FLOP accounting: FLOPs per unit of the metric (per sentence, per pair).
        per_unit = None
        if job["kind"] == "encode" and tokens:
            enc = tokens["encode"]
            bb = enc["by_batch_size"][str(job["batch_size"])]
            linear = 2 * fmod["matmul_params"] * enc["real_tokens"]
            attention = fmod["layers"] * 4 * fmod["hidden"] * bb["real_x_padded_len"]
            entry["flops"] = {
                "per_run": linear + attention,
                "linear": linear,
                "attention": attention,
                "real_tokens": enc["real_tokens"],
                "padded_tokens": bb["padded_tokens"],
                "sentences": enc["sentences"],
                "embtune_real_tokens": median_of(runs["embtune"], "real_tokens") if runs["embtune"] else None,
                "embtune_padded_tokens": median_of(runs["embtune"], "padded_tokens") if runs["embtune"] else None,
            }
            per_unit = (linear + attention) / enc["sentences"]
        elif job["kind"] == "train" and tokens and "train" in tokens:
            tpp = tokens["train"]["tokens_per_pair"]
            per_unit = 6 * fmod["matmul_params"] * tpp
            entry["flops"] = {"per_pair": per_unit, "tokens_per_pair": tpp, "attention": "excluded (<1%)"}
        elif job["kind"] == "matmul":
            per_unit = 1e9  # the metric is already GFLOP/s
        if per_unit is not None:
            entry["gflops"] = {s: (med[s]["value"] * per_unit / 1e9 if med[s] else None) for s in SYSTEMS}
        out[job["id"]] = entry

    # Attainable: the larger of the two matmul yardsticks.
    attainable = None
    if "matmul" in out:
        g = {s: v for s, v in out["matmul"]["gflops"].items() if v}
        if g:
            best = max(g, key=g.get)
            attainable = {"gflops": g[best], "source": best, "yardsticks": g}
    for entry in out.values():
        if "gflops" in entry and attainable:
            entry["fraction_of_attainable"] = {
                s: (v / attainable["gflops"] if v is not None else None) for s, v in entry["gflops"].items()
            }

    # Target rows (ratio = embtune / sentence-transformers).
    for jid, entry in out.items():
        kind, med = entry["kind"], entry["median"]
        e, p = med["embtune"], med["st"]
        if kind == "matmul":
            rows.append(_row(jid, f"{entry['title']} ({entry['unit']})", e, p, "value", entry["unit"], None, None))
        elif kind in ("encode", "train") and entry.get("target_ref"):
            # At least MiniLM's ratio for the same job, measured in this run.
            ref = entry["target_ref"]
            ref_entry = out.get(ref) or {}
            target = ref_entry.get("ratio")
            ref_title = ref_entry.get("title") or ref
            text = (f"≥ {target:.2f}× (MiniLM {ref_title})" if target is not None
                    else f"≥ MiniLM {ref_title} ratio (not measured)")
            row = _row(jid, f"{entry['title']} ({entry['unit']})", e, p, "value", entry["unit"],
                       ">=" if target is not None else None, target, text)
            row["target_ref"], row["target_value"] = ref, target
            rows.append(row)
            rows.append(_row(jid, f"{entry['title']} peak RSS (MiB)", e, p, "peak_rss_mib", "MiB", "<=", RSS_TARGET[kind]))
        elif kind in ("encode", "train"):
            target = entry.get("target") or SPEED_TARGET[kind]
            rows.append(_row(jid, f"{entry['title']} ({entry['unit']})", e, p, "value", entry["unit"], ">=", target))
            rows.append(_row(jid, f"{entry['title']} peak RSS (MiB)", e, p, "peak_rss_mib", "MiB", "<=", RSS_TARGET[kind]))
        elif kind == "cold":
            rows.append(_row(jid, f"{entry['title']} (wall s)", e, p, "value", "s", "<=", 0.2))
            rows.append(_row(jid, f"{entry['title']} peak RSS (MiB)", e, p, "peak_rss_mib", "MiB", None, None))
    return out, rows, attainable


def _row(jid, label, e, p, key, unit, op, target, target_text=None):
    ev = e[key] if e else None
    pv = p[key] if p else None
    ratio = ev / pv if ev is not None and pv else None
    met = None
    if op and ratio is not None:
        met = ratio >= target if op == ">=" else ratio <= target
    if target_text is None and op:
        target_text = f"{'≥' if op == '>=' else '≤'} {target}×"
    return {"job": jid, "label": label, "unit": unit, "embtune": ev, "st": pv, "ratio": ratio,
            "target": target_text, "met": met}


def contention(report):
    """A note when other work held the cores the benchmark needs: the 1-minute load average at
    the start exceeded the cores left over beyond the benchmark's threads (+0.5)."""
    load, nproc, threads = report["loadavg_before"][0], report["machine"]["nproc"], report["settings"]["threads"]
    if load > max(nproc - threads, 0) + 0.5:
        return (f"the machine was busy with other work (1-minute load average {load:.2f} before the run, "
                f"{nproc} cores, {threads} benchmark threads): both systems ran contended and the numbers "
                f"are noisier than the targets need.")
    return None


def report_models(report):
    """FLOP_MODELS keys of the jobs in a report, in job order (an old report: no model keys)."""
    seen = []
    for e in report["jobs"].values():
        k = e.get("model")
        if k and k not in seen:
            seen.append(k)
    return seen


def models_phrase(report):
    keys = report_models(report)
    if not keys or keys == ["minilm"]:
        return "all-MiniLM-L6-v2"
    if keys == ["mpnet"]:
        return "all-mpnet-base-v2 (the matmul yardstick aside)"
    names = [model_title(k) for k in keys if k != "minilm"]
    return ("all-MiniLM-L6-v2 (rows without a model name) and " + ", ".join(names) + " (rows so named)"
            if "minilm" in keys else ", ".join(names))


def exec_lines(report):
    """One line per model: the execution path embtune's encode/train results reported."""
    by = (report.get("embtune") or {}).get("exec_by_model") or {}
    L = []
    for key, paths in by.items():
        name = paths[0].get("model_name") or key if paths else key
        fams = sorted({x["family"] for x in paths if x.get("family")})
        fam = f" ({', '.join(fams)})" if fams else ""
        def path(x):
            batches = {True: ", packed batches", False: ", padded batches"}.get(x.get("packed"), "")
            return f"`{x['exec']}`{batches}"
        if len(paths) == 1:
            what = path(paths[0])
        else:
            what = "; ".join(f"{path(x)} ({', '.join(x['jobs'])})" for x in paths)
        L.append(f"- embtune execution path, {name.split('/')[-1]}{fam}: {what}")
    return L


def flop_model_text(report, flop_jobs):
    """The FLOP-model paragraph. A report whose FLOP rows are all MiniLM's (every old one) gets
    the text it always had; with other models, each model's parameter count and token counts."""
    fm, jobs = report["flop_model"], report["jobs"]
    by = fm.get("by_model") or {}
    keys = []
    for j in flop_jobs:
        k = jobs[j].get("model") or "minilm"
        if k not in keys:
            keys.append(k)
    if keys == ["minilm"] or not by:
        return (
            f"FLOP model: matrix-product parameters outside the embeddings, "
            f"{LAYERS} × (4·{HIDDEN}² + 2·{HIDDEN}·{INTERMEDIATE}) = {MATMUL_PARAMS:,}. Encode = "
            f"2 × {MATMUL_PARAMS:,} × real tokens ({fm.get('encode_real_tokens') or 0:,} over "
            f"{fm.get('encode_sentences') or 0:,} sentences) + attention 4·S·{HIDDEN} per real token per layer, "
            f"S = the padded length of its length-sorted batch (≈1 % of the total). Training, per pair = "
            f"6 × {MATMUL_PARAMS:,} × {fm.get('train_tokens_per_pair') or float('nan'):.2f} (the mean tokens of "
            f"sentence1 + sentence2 over STS-B train, special tokens included); attention, "
            f"embeddings, loss and optimizer excluded. The same count is used for both systems, so the "
            f"GFLOP/s ratio equals the throughput ratio."
        )
    params, enc, train = [], [], []
    for k in keys:
        b = by.get(k) or {}
        name = (b.get("model") or k).split("/")[-1]
        titles = ", ".join(jobs[j]["title"] for j in flop_jobs if (jobs[j].get("model") or "minilm") == k)
        params.append(
            f"{name} ({b.get('family', '?')}; {titles}): {b.get('layers')} × (4·{b.get('hidden')}² + "
            f"2·{b.get('hidden')}·{b.get('intermediate')}) = {b.get('matmul_params') or 0:,}"
        )
        enc.append(f"{name} {b.get('encode_real_tokens') or 0:,} over {b.get('encode_sentences') or 0:,} sentences")
        tpp = b.get("train_tokens_per_pair")
        train.append(f"{name} {tpp if tpp is not None else float('nan'):.2f}")
    return (
        f"FLOP model: matrix-product parameters outside the embeddings, P = layers × (4·H² + 2·H·I), "
        f"per model — " + "; ".join(params) + ". Encode = 2 × P × real tokens (" + "; ".join(enc)
        + ", each model's own tokenizer) + attention 4·S·H per real token per layer, S = the padded length "
        f"of its length-sorted batch (≈1 % of the total or less). Training, per pair = 6 × P × tokens per pair ("
        + ", ".join(train) + ": the mean tokens of sentence1 + sentence2 over STS-B train, special tokens "
        f"included); attention, embeddings, loss and optimizer excluded. The same count is used for both "
        f"systems, so the GFLOP/s ratio equals the throughput ratio."
    )


def markdown(report):
    s, m, v, et = report["settings"], report["machine"], report.get("python_versions") or {}, report["embtune"]
    flags = ", ".join(f"{k} {'yes' if val else 'no'}" for k, val in m["flags"].items() if k in ("avx512f", "avx512_bf16", "avx512_vnni"))
    L = []
    quick = " — QUICK smoke run (1 round, few steps: not representative)" if s["quick"] else ""
    L.append(f"## CPU: {m['cpu_model']}, {m['nproc']} cores, {report['date'][:10]}{quick}")
    L.append("")
    L.append(
        f"`{report['command']}` (raw runs, medians and machine details: "
        f"[{report['output_link']}]({report['output_link']})). {models_phrase(report)}, each system a separate "
        f"process per run, interleaved embtune / sentence-transformers, median of {s['rounds']} "
        f"round{'s' if s['rounds'] != 1 else ''} ({s['cold_rounds']} for cold start). "
        f"Threads: {s['threads']} on both sides — `RAYON_NUM_THREADS={s['threads']}` for embtune, "
        f"`torch.set_num_threads({s['threads']})` for Python (plus `RAYON_NUM_THREADS`, which only "
        f"sizes the tokenizers' pool there). OMP: torch's default, `OMP_NUM_THREADS` "
        f"{'unset' if s['omp_num_threads'] is None else '= ' + s['omp_num_threads']} "
        f"(torch's default here: {v.get('torch_default_threads', '?')} intra-op threads, which the cold-start "
        f"job keeps). `HF_HUB_OFFLINE=1` on both sides."
    )
    L.append("")
    L.append(
        f"Machine: {m['cpu_model']}, nproc {m['nproc']}, {m['mem_total_gib']:.1f} GiB, {flags}; "
        f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in report['loadavg_before'])} before, "
        f"{'/'.join(f'{x:.2f}' for x in report['loadavg_after'])} after. "
        f"embtune {et['git_commit'][:7] if et['git_commit'] else '?'}{' (+ uncommitted changes)' if et['git_dirty'] else ''}, "
        f"release build; Python {v.get('python', '?')}, torch {v.get('torch', '?')}, sentence-transformers "
        f"{v.get('sentence_transformers', '?')}, transformers {v.get('transformers', '?')}."
    )
    ex = exec_lines(report)
    if ex:
        L.append("")
        L.extend(ex)
    warnings = list(report.get("warnings") or [])
    busy = contention(report)
    if busy:
        warnings.append(busy)
    if warnings:
        L.append("")
        for w in warnings:
            L.append(f"**Warning:** {w}")
    L.append("")
    L.append("| job | embtune | sentence-transformers | embtune/ST | target | |")
    L.append("|---|---:|---:|---:|---|---|")
    for r in report["targets"]:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        met = "" if r["met"] is None else ("met" if r["met"] else "**missed**")
        L.append(f"| {r['label']} | {fmt(r['embtune'], r['unit'])} | {fmt(r['st'], r['unit'])} | {ratio} | {r['target'] or '—'} | {met} |")
    att = report.get("attainable")
    jobs = report["jobs"]
    flop_jobs = [j for j, e in jobs.items() if e["kind"] in ("encode", "train") and e.get("gflops")]
    if flop_jobs:
        L.append("")
        if att:
            L.append(
                f"Achieved FLOP rate against the attainable f32 matmul rate, "
                f"{att['gflops']:.1f} GFLOP/s (the larger yardstick: "
                f"{'torch' if att['source'] == 'st' else 'embtune/candle (gemm crate)'}; "
                + ", ".join(f"{'torch' if k == 'st' else 'embtune'} {x:.1f}" for k, x in att["yardsticks"].items())
                + "):"
            )
        L.append("")
        L.append("| job | FLOPs per unit | embtune GFLOP/s | of attainable | ST GFLOP/s | of attainable |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for j in flop_jobs:
            e = jobs[j]
            fr = e.get("fraction_of_attainable") or {}
            per = e["flops"]["per_run"] / e["flops"]["sentences"] if e["kind"] == "encode" else e["flops"]["per_pair"]
            unit = "sentence" if e["kind"] == "encode" else "pair"

            def pct(x):
                return f"{100 * x:.0f} %" if x is not None else "—"

            g = e["gflops"]
            L.append(
                f"| {e['title']} | {per / 1e6:,.0f} M / {unit} | {fmt(g['embtune'], 'GFLOP/s')} | {pct(fr.get('embtune'))} "
                f"| {fmt(g['st'], 'GFLOP/s')} | {pct(fr.get('st'))} |"
            )
        L.append("")
        L.append(flop_model_text(report, flop_jobs))
    cold = jobs.get("cold", {}).get("embedding_agreement")
    L.append("")
    notes = [
        "Peak RSS: `ru_maxrss` of each process from `os.wait4` (whole process: runtime, model, data).",
        "Encode and train throughput exclude process start and model load (both sides warm up first: "
        "two batches for encode, 3 optimizer steps for training); cold start is the wall time from launch "
        f"to exit of `embtune embed` / `bench_st.py cold` on one sentence (imports, model load, encode, .npy write).",
    ]
    if cold and "cosine" in cold:
        notes.append(f"Cold-start embeddings agree: cosine {cold['cosine']:.7f}, max abs diff {cold['max_abs_diff']:.1e}.")
    L.append(" ".join(notes))
    return "\n".join(L) + "\n"


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def update_benchmarks_md(path, section):
    block = f"{START}\n{section}{END}"
    text = read(path)
    if text is None:
        text = "# Benchmarks\n\n" + block + "\n"
    elif START in text and END in text and text.index(START) < text.index(END):
        i, j = text.index(START), text.index(END) + len(END)
        text = text[:i] + block + text[j:]
    else:
        # After the intro paragraph: the title, its first paragraph, then the block.
        lines = text.split("\n")
        i = 0
        if lines and lines[0].startswith("# "):
            i = 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].startswith("#"):
                i += 1
        lines[i:i] = ["", block] if i > 0 else [block, ""]
        text = "\n".join(lines)
    write_atomic(path, text)


# ---------------------------------------------------------------------------------------------


def main():
    venv = os.environ.get("EMBTUNE_PY_VENV", os.path.expanduser("~/.cache/embtune/py-venv"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per job (default 3)")
    p.add_argument("--cold-rounds", type=int, default=5, help="rounds of the cold-start job (default 5)")
    p.add_argument("--train-steps", type=int, default=30, help="timed training steps after 3 warm-up steps (default 30)")
    p.add_argument("--mpnet-train-steps", type=int, default=None,
                   help="timed steps of mpnet-train-cosent-b16 (default 10; with --quick, at most --train-steps)")
    p.add_argument("--models", default="minilm,mpnet",
                   help=f"comma-separated models whose jobs run: {','.join(FLOP_MODELS)} (default both; matmul always)")
    p.add_argument("--threads", type=int, default=2, help="compute threads on both sides (default 2)")
    p.add_argument("--no-packing", action="store_true", help="embtune pads every batch (encode and train jobs)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--only", help="comma-separated job ids or kinds (matmul, encode, train, cold, encode-b32, …)")
    p.add_argument("--python", default=os.path.join(venv, "bin", "python"), help="the venv's python (scripts/setup-python.sh)")
    p.add_argument("--embtune", default=os.path.join(ROOT, "target", "release", "embtune"))
    p.add_argument("--output", "--out-json", default=os.path.join(ROOT, "results", "bench-cpu.json"))
    p.add_argument("--markdown", "--out-md", default=os.path.join(ROOT, "BENCHMARKS.md"),
                   help="file whose bench-cpu section is replaced (made when absent; also for --render)")
    p.add_argument("--no-markdown", action="store_true")
    p.add_argument("--quick", action="store_true", help="mark the report as a smoke run (scripts/bench.sh sets it for QUICK=1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process before it is killed")
    p.add_argument("--render", metavar="JSON", help="only rewrite the Markdown section from an earlier results file")
    a = p.parse_args()
    a.models = [x for x in a.models.split(",") if x]
    bad = [x for x in a.models if x not in FLOP_MODELS]
    if bad or not a.models:
        p.error(f"--models: unknown {bad}; models: {','.join(FLOP_MODELS)}")
    if a.mpnet_train_steps is None:
        # QUICK=1 scripts/bench.sh passes --quick --train-steps 5: the mpnet job gets as few.
        a.mpnet_train_steps = min(10, a.train_steps) if a.quick else 10
    if a.render:
        with open(a.render, encoding="utf-8") as f:
            section = markdown(json.load(f))
        update_benchmarks_md(a.markdown, section)
        print(section)
        return
    a.embtune = os.path.abspath(a.embtune)
    for path, what in ((a.embtune, "the embtune binary (cargo build --release)"), (a.python, "the venv's python (scripts/setup-python.sh)")):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"bench: {path} missing: {what}")

    base = dict(os.environ)
    base["HF_HUB_OFFLINE"] = "1"
    base["RAYON_NUM_THREADS"] = str(a.threads)
    envs = {"embtune": dict(base), "st": dict(base)}

    command = os.environ.get("EMBTUNE_BENCH_COMMAND") or shlex.join(["python3", "scripts/bench.py"] + sys.argv[1:])
    loadavg_before = os.getloadavg()
    report = {
        "schema": 1,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "driver_argv": sys.argv[1:],
        "settings": {
            "model": MODEL,
            "rounds": a.rounds,
            "cold_rounds": a.cold_rounds,
            "train_steps": a.train_steps,
            "mpnet_train_steps": a.mpnet_train_steps,
            "models": {k: FLOP_MODELS[k]["model"] for k in a.models},
            "warm_up_steps": 3,
            "threads": a.threads,
            "matmul_n": a.matmul_n,
            "quick": a.quick,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "env": {"HF_HUB_OFFLINE": "1", "RAYON_NUM_THREADS": str(a.threads)},
            "python": a.python,
        },
        "machine": machine_info(),
        "loadavg_before": list(loadavg_before),
    }
    report["python_versions"] = python_versions(a.python, envs["st"])
    report["embtune"] = embtune_info(a.embtune)
    log(f"{report['machine']['cpu_model']}, nproc {report['machine']['nproc']}, load {loadavg_before[0]:.2f}; "
        f"embtune {report['embtune']['git_commit']}, torch {(report['python_versions'] or {}).get('torch')}")

    failures = []
    with tempfile.TemporaryDirectory(prefix="embtune-bench-") as scratch:
        jobs = define_jobs(a, scratch)
        # Token counts for the FLOP accounting (untimed), with each model's own tokenizer: MiniLM's
        # whenever it is selected (as always), the others' when one of their jobs runs.
        counted = [k for k in a.models if k == "minilm" or any(j["model"] == k for j in jobs)]
        tokens_by_model = {}
        for key in counted:
            tok = run_process(
                [a.python, os.path.join(ROOT, "scripts", "bench_st.py"), "tokens", "--model", FLOP_MODELS[key]["model"],
                 "--data", TEST, "--train-data", TRAIN, "--batch-sizes", "32,128"], envs["st"], a.timeout)
            tokens = last_json(tok["stdout"]) if tok["rc"] == 0 else None
            if tokens is None:
                failures.append({"job": "tokens", "model": key, "system": "st", "why": f"exit {tok['rc']}",
                                 "stderr_tail": tail(tok["stderr"])})
                log(f"token count job ({key}) FAILED:\n" + tail(tok["stderr"]))
            tokens_by_model[key] = tokens
        report["tokens"] = tokens_by_model.get("minilm")
        report["tokens_by_model"] = tokens_by_model

        runs_by_job = {}
        for job in jobs:
            log(f"== {job['id']} ==")
            runs_by_job[job["id"]] = run_job(job, a, envs, failures)

    summary, rows, attainable = summarize(jobs, runs_by_job, tokens_by_model, a)
    tokens = tokens_by_model.get("minilm")
    report["loadavg_after"] = list(os.getloadavg())
    report["flop_model"] = {
        "layers": LAYERS, "hidden": HIDDEN, "intermediate": INTERMEDIATE,
        "matmul_params_per_layer": MATMUL_PARAMS_PER_LAYER, "matmul_params": MATMUL_PARAMS,
        "encode": "2 * matmul_params * real_tokens + layers * 4 * hidden * sum(len_i * S_batch)",
        "train": "6 * matmul_params * tokens_per_pair * pairs (attention excluded)",
        "encode_real_tokens": (tokens or {}).get("encode", {}).get("real_tokens"),
        "encode_sentences": (tokens or {}).get("encode", {}).get("sentences"),
        "train_tokens_per_pair": (tokens or {}).get("train", {}).get("tokens_per_pair"),
        # The same per model (the keys above are all-MiniLM-L6-v2's), for the models counted.
        "by_model": {
            k: dict(FLOP_MODELS[k],
                    encode_real_tokens=(t or {}).get("encode", {}).get("real_tokens"),
                    encode_sentences=(t or {}).get("encode", {}).get("sentences"),
                    train_tokens_per_pair=(t or {}).get("train", {}).get("tokens_per_pair"))
            for k, t in tokens_by_model.items()
        },
    }
    # embtune's model family and execution path per model (from its encode/train results).
    exec_by_model = {}
    for jid, e in summary.items():
        for r in e["runs"]["embtune"]:
            res = r["result"]
            if res.get("exec") is None or not e.get("model"):
                continue
            paths = exec_by_model.setdefault(e["model"], [])
            key = (res.get("family"), res["exec"], res.get("packed"))
            hit = next((x for x in paths if (x["family"], x["exec"], x.get("packed")) == key), None)
            if hit is None:
                hit = {"model_name": e["model_name"], "family": res.get("family"), "exec": res["exec"],
                       "packed": res.get("packed"), "jobs": []}
                paths.append(hit)
            if jid not in hit["jobs"]:
                hit["jobs"].append(jid)
    report["embtune"]["exec_by_model"] = exec_by_model
    report["attainable"] = attainable
    report["jobs"] = summary
    report["targets"] = rows
    report["failures"] = failures
    warnings = []
    sha_after = sha256(a.embtune)
    report["embtune"]["binary_sha256_after"] = sha_after
    if sha_after != report["embtune"]["binary_sha256"]:
        warnings.append("the embtune binary changed during the run (rebuilt under it); embtune numbers may mix two builds.")
    for jid, e in summary.items():
        f = e.get("flops") or {}
        if f.get("embtune_real_tokens") is not None and f["embtune_real_tokens"] != f["real_tokens"]:
            warnings.append(f"{jid}: embtune counted {f['embtune_real_tokens']} real tokens, the Python tokenizer {f['real_tokens']}.")
    report["warnings"] = warnings

    report["output_link"] = os.path.relpath(os.path.abspath(a.output), os.path.dirname(os.path.abspath(a.markdown)))
    write_atomic(a.output, json.dumps(report, indent=1) + "\n")
    log(f"wrote {os.path.relpath(a.output, ROOT)}")
    section = markdown(report)
    if failures:
        log(f"{len(failures)} run(s) failed; {os.path.relpath(a.markdown, ROOT)} not updated")
        for f in failures:
            log(f"  {f['job']} / {NAMES.get(f['system'], f['system'])}: {f['why']}")
        sys.exit(1)
    if not a.no_markdown:
        update_benchmarks_md(a.markdown, section)
        log(f"updated the bench-cpu section of {os.path.relpath(a.markdown, ROOT)}")
    print(section)


if __name__ == "__main__":
    main()

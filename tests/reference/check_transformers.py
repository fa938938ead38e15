#!/usr/bin/python3
"""Cross-check the golden fixtures against real Hugging Face `transformers`,
and (with --cli) moelab's own forward pass -- on the GPU backend by default --
against transformers (issue 7).

    python3 tests/reference/check_transformers.py DIR
    python3 tests/reference/check_transformers.py DIR --cli MOELAB_CLI [--device cuda|cpu|auto]
    python3 tests/reference/check_transformers.py DIR --cli MOELAB_CLI --device cpu --expected-only

DIR is the output folder of make_fixtures.py (Mixtral, Qwen2-MoE, Qwen3-MoE,
OLMoE and GraniteMoE fixtures). For every DIR/NAME holding an expected.json,
the checkpoint is loaded with

    AutoModelForCausalLM.from_pretrained(DIR/NAME, torch_dtype=torch.float32,
                                         attn_implementation="eager")

and run on the fixture's tokens with output_router_logits=True. It checks
  * no missing / unexpected / mismatched checkpoint keys (tensor naming),
  * logits: max|hf - expected| <= 1e-4 * max|expected|,
  * for every MoE layer (in order): the chosen experts (top-k of the router
    probabilities, descending) are identical and the router probabilities
    agree to 1e-4 absolute. Depending on the transformers version the
    recorded "router_logits" are raw logits or already-softmaxed probabilities;
    both are handled (top-k is the same either way). GraniteMoE reports the
    logits of all experts (GraniteMoeTopKGating chooses the top-k of the
    logits, the same experts as the top-k of their softmax).

--cli MOELAB_CLI additionally runs, for every fixture,

    MOELAB_CLI forward --model DIR/NAME --tokens T0,T1,... --device DEVICE --json

(DEVICE from --device, default cuda) and checks moelab against transformers:
  * logits: max|moelab - hf| <= 1e-4 * max|hf|,
  * the MoE layers moelab reports are those of expected.json, and for every
    layer and token the set of experts moelab chose is transformers' top-k of
    the router probabilities. Ties are skipped: a token is compared only where
    the k-th and (k+1)-th largest reference probabilities differ by more than
    1e-6 (otherwise either choice is right).
With --device cuda, a CLI that falls back to the CPU (it says "...; using the
CPU" on stderr) has checked no GPU result: that is reported and the script
exits 77 (skipped). With --device auto the CLI falls back silently, so the
device actually used is not known.

--expected-only (with --cli) skips transformers altogether (torch is not needed
either) and checks the CLI's output against expected.json instead, with the
same tolerances: a way to exercise the --cli check where transformers is not
installed.

One line per fixture gives the figures: the max relative logits difference
(logits_rel) and whether the chosen experts agree (experts=yes/no, with the
number of token-layers compared and of ties skipped).

Exit status: 0 all fixtures agree, 1 some mismatch (or a CLI run failed),
2 usage, 77 skipped -- transformers (or torch) cannot be imported here (unless
--expected-only), or --device cuda fell back to the CPU.
"""

import argparse
import json
import math
import os
import subprocess
import sys

LOGIT_RTOL = 1e-4
PROB_ATOL = 1e-4
TIE_GAP = 1e-6
CLI_TIMEOUT_S = 180
SKIP = 77


class CliFellBack(Exception):
    """--device cuda was asked, but the CLI ran on the CPU."""


def _load(torch, AutoModelForCausalLM, path):
    base = dict(attn_implementation="eager", output_loading_info=True)
    try:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, **base)
    except TypeError:
        # very new versions renamed torch_dtype -> dtype
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **base)


def _as_probs(torch, r):
    r = r.detach().double().reshape(-1, r.shape[-1])
    looks_like_probs = bool((r >= 0).all()) and bool(((r.sum(-1) - 1).abs() < 1e-4).all())
    return r if looks_like_probs else torch.softmax(r, dim=-1)


def check_one(torch, AutoModelForCausalLM, d, exp):
    """transformers against expected.json. Also returns transformers' logits and
    per-MoE-layer router probabilities (nested lists) for the --cli check."""
    loaded = _load(torch, AutoModelForCausalLM, d)
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        vals = list(info.get(key) or [])
        if vals:
            problems.append("%s: %s" % (key, vals[:6]))
    model = model.float().eval()
    ids = torch.tensor([exp["tokens"]], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True, use_cache=False)
    logits = out.logits[0].double()
    want = torch.tensor(exp["logits"], dtype=torch.float64)
    if logits.shape != want.shape:
        problems.append("logits shape %s != %s" % (tuple(logits.shape), tuple(want.shape)))
        rel = float("inf")
    else:
        rel = float((logits - want).abs().max()) / float(want.abs().max())
        if not rel <= LOGIT_RTOL:
            problems.append("logits max rel diff %.3g > %g" % (rel, LOGIT_RTOL))

    router = getattr(out, "router_logits", None)
    router = [r for r in (router or ()) if r is not None]
    n_exp = len(exp["routing"])
    if len(router) != n_exp:
        problems.append("model reported %d router outputs, expected.json has %d MoE layers"
                        % (len(router), n_exp))
    worst_p = 0.0
    hf_probs = []
    for r, x in zip(router, exp["routing"]):
        probs = _as_probs(torch, r)
        hf_probs.append(probs.tolist())
        want_p = torch.tensor(x["probs"], dtype=torch.float64)
        k = len(x["experts"][0])
        got_e = torch.topk(probs, k, dim=-1).indices.tolist()
        if got_e != x["experts"]:
            bad = [t for t, (a, b) in enumerate(zip(got_e, x["experts"])) if a != b]
            problems.append("layer %d: experts differ at tokens %s" % (x["layer"], bad[:6]))
        if probs.shape == want_p.shape:
            dp = float((probs - want_p).abs().max())
            worst_p = max(worst_p, dp)
            if dp > PROB_ATOL:
                problems.append("layer %d: router probs differ by %.3g" % (x["layer"], dp))
        else:
            problems.append("layer %d: router shape %s != %s" % (x["layer"], tuple(probs.shape),
                                                                 tuple(want_p.shape)))
    return problems, rel, worst_p, len(router), logits.tolist(), hf_probs


# ---- the --cli check: plain Python, so --expected-only needs neither torch nor transformers ----

def run_cli(cli, d, tokens, device):
    """moelab-cli forward --json on one fixture; returns the parsed JSON.
    Raises CliFellBack when --device cuda ran on the CPU, RuntimeError when the run failed."""
    cmd = [cli, "forward", "--model", d, "--tokens", ",".join(str(int(t)) for t in tokens),
           "--device", device, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=CLI_TIMEOUT_S)
    if device == "cuda":
        fell = [l.strip() for l in r.stderr.splitlines() if "using the CPU" in l]
        if fell:
            raise CliFellBack(fell[0])
    if r.returncode != 0:
        tail = " | ".join(l.strip() for l in r.stderr.splitlines() if l.strip())[-400:]
        raise RuntimeError("moelab-cli exited %d: %s" % (r.returncode, tail or "(no stderr)"))
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise RuntimeError("moelab-cli --json output is not JSON: %s" % e)


def _num(v):
    return float("nan") if v is None else float(v)  # nlohmann::json writes NaN/inf as null


def _max_rel_diff(got, want):
    """max|got - want| / max|want| over [T][V] lists; inf when the shapes differ, nan when
    anything is not finite."""
    if len(got) != len(want) or any(len(a) != len(b) for a, b in zip(got, want)):
        return float("inf")
    diff = 0.0
    scale = 0.0
    for a_row, b_row in zip(got, want):
        for a, b in zip(a_row, b_row):
            a, b = _num(a), _num(b)
            if not (math.isfinite(a) and math.isfinite(b)):
                return float("nan")
            diff = max(diff, abs(a - b))
            scale = max(scale, abs(b))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _shape(rows):
    return "%dx%s" % (len(rows), len(rows[0]) if rows else 0)


def compare_cli(got, ref_logits, ref_layers):
    """moelab's forward JSON against a reference: ref_logits [T][V], ref_layers a list of
    (layer index, probs [T][E]) for every MoE layer in order. Returns
    (problems, logits_rel, experts_agree, token-layers compared, ties skipped)."""
    problems = []
    logits = got.get("logits")
    if not isinstance(logits, list):
        problems.append("CLI JSON has no logits")
        rel = float("inf")
    else:
        rel = _max_rel_diff(logits, ref_logits)
        if math.isinf(rel):
            problems.append("CLI logits shape %s != %s" % (_shape(logits), _shape(ref_logits)))
        elif not rel <= LOGIT_RTOL:
            problems.append("CLI logits max rel diff %.3g > %g" % (rel, LOGIT_RTOL))

    routing = got.get("routing") or []
    got_layers = [x.get("layer") for x in routing]
    want_layers = [layer for layer, _ in ref_layers]
    experts_ok = True
    if got_layers != want_layers:
        problems.append("CLI MoE layers %s != reference %s" % (got_layers, want_layers))
        experts_ok = False
    compared = ties = 0
    for x, (layer, probs) in zip(routing, ref_layers):
        chosen = x.get("experts") or []
        if len(chosen) != len(probs):
            problems.append("layer %s: CLI routed %d tokens, reference %d" % (layer, len(chosen), len(probs)))
            experts_ok = False
            continue
        bad = []
        for t, (c, p) in enumerate(zip(chosen, probs)):
            k = len(c)
            order = sorted(range(len(p)), key=lambda e: -p[e])
            if k < 1 or k > len(p) or len(set(c)) != k:
                bad.append(t)
                continue
            if k < len(p) and p[order[k - 1]] - p[order[k]] <= TIE_GAP:
                ties += 1  # the k-th and (k+1)-th are tied: either choice is right
                continue
            compared += 1
            if set(c) != set(order[:k]):
                bad.append(t)
        if bad:
            experts_ok = False
            t = bad[0]
            want = sorted(range(len(probs[t])), key=lambda e: -probs[t][e])[:len(chosen[t])]
            problems.append("layer %s: CLI experts differ from the reference top-k at tokens %s "
                            "(token %d: %s vs %s)" % (layer, bad[:6], t, chosen[t], want))
    return problems, rel, experts_ok, compared, ties


def _cli_figures(device, against, rel, ok, compared, ties):
    return "cli(%s) vs %s: logits_rel=%.2e experts=%s (%d compared, %d ties)" % (
        device, against, rel, "yes" if ok else "no", compared, ties)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="check_transformers.py",
        description="Check the golden fixtures (and, with --cli, moelab-cli forward) against "
                    "Hugging Face transformers.")
    ap.add_argument("fixtures", metavar="FIXTURE_DIR", help="output folder of make_fixtures.py")
    ap.add_argument("--cli", metavar="PATH", help="moelab-cli to check against transformers")
    ap.add_argument("--device", choices=("cuda", "cpu", "auto"), default=None,
                    help="--device for moelab-cli forward (default cuda)")
    ap.add_argument("--expected-only", action="store_true",
                    help="with --cli: compare with expected.json instead of transformers")
    args = ap.parse_args(argv[1:])  # usage errors exit 2
    if not os.path.isdir(args.fixtures):
        ap.error("not a folder: %s" % args.fixtures)
    if args.cli is None and (args.device is not None or args.expected_only):
        ap.error("--device and --expected-only need --cli")
    if args.cli is not None and not (os.path.isfile(args.cli) and os.access(args.cli, os.X_OK)):
        ap.error("--cli %s: not an executable file" % args.cli)
    device = args.device or "cuda"

    torch = transformers = AutoModelForCausalLM = None
    if not args.expected_only:
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM
        except Exception as e:  # ImportError, or a broken install
            print("check_transformers: skipped, cannot import transformers: %s: %s" % (type(e).__name__, e))
            return SKIP
        torch.set_num_threads(1)
    root = args.fixtures
    names = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "expected.json")))
    if not names:
        print("check_transformers: no fixtures (*/expected.json) under %s" % root)
        return 1
    if args.expected_only:
        print("moelab-cli %s --device %s against expected.json (transformers not used)" % (args.cli, device))
    else:
        print("transformers %s, torch %s%s" % (transformers.__version__, torch.__version__,
                                              "" if args.cli is None else
                                              "; moelab-cli %s --device %s" % (args.cli, device)))
    failed = 0
    for name in names:
        d = os.path.join(root, name)
        problems, figures = [], []
        try:
            with open(os.path.join(d, "expected.json")) as f:
                exp = json.load(f)
            if args.expected_only:
                ref_logits = exp["logits"]
                ref_layers = [(x["layer"], x["probs"]) for x in exp["routing"]]
                against = "expected"
            else:
                p, rel, dp, nr, ref_logits, hf_probs = check_one(torch, AutoModelForCausalLM, d, exp)
                problems += p
                figures.append("logits_rel=%.2e router_layers=%d probs_abs=%.2e" % (rel, nr, dp))
                ref_layers = [(x["layer"], pr) for x, pr in zip(exp["routing"], hf_probs)]
                against = "hf"
            if args.cli is not None:
                got = run_cli(args.cli, d, exp["tokens"], device)
                p, rel, ok, compared, ties = compare_cli(got, ref_logits, ref_layers)
                problems += p
                figures.append(_cli_figures(device, against, rel, ok, compared, ties))
        except CliFellBack as e:
            print("%-22s SKIP %s" % (name, e))
            print("check_transformers: --device cuda fell back to the CPU, so no GPU result was "
                  "checked: skipped")
            if failed:
                print("(%d fixture(s) checked before this one failed)" % failed)
                return 1
            return SKIP
        except Exception as e:  # report and continue with the other fixtures
            problems.append("%s: %s" % (type(e).__name__, e))
        status = "ok" if not problems else "FAIL"
        failed += bool(problems)
        print("%-22s %-4s %s" % (name, status, "; ".join(figures) if figures else "-"))
        for p in problems:
            print("    " + p)
    what = "expected.json" if args.expected_only else "transformers"
    print("%d/%d fixtures agree with %s" % (len(names) - failed, len(names), what))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

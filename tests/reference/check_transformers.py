#!/usr/bin/python3
"""Cross-check the golden fixtures against real Hugging Face `transformers`.

    python3 tests/reference/check_transformers.py DIR

DIR is the output folder of make_fixtures.py. For every DIR/NAME holding an
expected.json, the checkpoint is loaded with

    AutoModelForCausalLM.from_pretrained(DIR/NAME, torch_dtype=torch.float32,
                                         attn_implementation="eager")

and run on the fixture's tokens with output_router_logits=True. It checks
  * no missing / unexpected / mismatched checkpoint keys (tensor naming),
  * logits: max|hf - expected| <= 1e-4 * max|expected|,
  * for every MoE layer (in order): the chosen experts (top-k of the router
    probabilities, descending) are identical and the router probabilities
    agree to 1e-4 absolute. Depending on the transformers version the
    recorded "router_logits" are raw logits or already-softmaxed probabilities;
    both are handled (top-k is the same either way).

Exit status: 0 all fixtures agree, 1 some mismatch, 2 usage, 77 transformers
(or torch) cannot be imported here -- the convention for "skipped".
"""

import json
import os
import sys

LOGIT_RTOL = 1e-4
PROB_ATOL = 1e-4


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


def check_one(torch, AutoModelForCausalLM, d):
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
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
    for r, x in zip(router, exp["routing"]):
        probs = _as_probs(torch, r)
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
    return problems, rel, worst_p, len(router)


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: check_transformers.py FIXTURE_DIR", file=sys.stderr)
        return 2
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
    except Exception as e:  # ImportError, or a broken install
        print("check_transformers: skipped, cannot import transformers: %s: %s" % (type(e).__name__, e))
        return 77
    torch.set_num_threads(1)
    root = argv[1]
    names = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "expected.json")))
    if not names:
        print("check_transformers: no fixtures (*/expected.json) under %s" % root)
        return 1
    print("transformers %s, torch %s" % (transformers.__version__, torch.__version__))
    failed = 0
    for name in names:
        try:
            problems, rel, dp, nr = check_one(torch, AutoModelForCausalLM, os.path.join(root, name))
        except Exception as e:  # report and continue with the other fixtures
            problems, rel, dp, nr = ["%s: %s" % (type(e).__name__, e)], float("nan"), float("nan"), 0
        status = "ok" if not problems else "FAIL"
        failed += bool(problems)
        print("%-22s %-4s logits_rel=%.2e router_layers=%d probs_abs=%.2e" % (name, status, rel, nr, dp))
        for p in problems:
            print("    " + p)
    print("%d/%d fixtures agree with transformers" % (len(names) - failed, len(names)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

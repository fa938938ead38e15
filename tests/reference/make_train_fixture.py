#!/usr/bin/python3
"""Write tiny MoE checkpoints + a training batch + float64 golden training results.

    /usr/bin/python3 tests/reference/make_train_fixture.py --out DIR

Layout:
    DIR/mixtral_train/{config.json, model.safetensors, batch.json, expected_train.json,
                       expected_train_bf16.json}
    DIR/qwen2_moe_train/{...}

mixtral_train    vocab 64, hidden 32, 2 layers, 4 heads / 2 kv heads (head_dim 8),
                 4 experts top-2 (always renormalised), expert hidden 24, untied
qwen2_moe_train  vocab 64, hidden 32, 3 layers, layer 1 dense (mlp_only_layers=[1],
                 intermediate 40), 4 experts top-2 (norm_topk_prob=false), moe hidden
                 24, shared expert (hidden 32) + sigmoid shared_expert_gate,
                 q/k/v biases, untied

batch.json: B=3 sequences of T+1=9 tokens, aux_loss_alpha 0.05, z_loss_coef 0.01,
lr 1e-2, betas [0.9, 0.95], eps 1e-8, weight_decay 0.1, clip 1.0, steps 3.
expected_train.json is written by train_reference.py (see its docstring for the
schema), expected_train_bf16.json by train_reference.py --bf16 (the same steps
with every matrix product's operands rounded to bfloat16, forward and backward).
The lab's router options, each on the Mixtral fixture's shapes, 2 steps, fp32
only (train_reference.py's batched forward; see its docstring):
    mixtral_capacity_drop      capacity_factor 0.6 (8 of the 48 slots per
                               expert), overflow dropped
    mixtral_capacity_reroute   the same, overflow re-routed
    mixtral_noisy              noisy top-k gating, noise_seed 1234
    mixtral_sigmoid_bias       sigmoid scores, selection bias [E] that changes
                               some tokens' choices
expected_train.json also holds every step's expert ids and dropped flags.
Weights are stored in F32; router weights are re-drawn (next seed) until, at
every one of the training steps of both runs, every token of every MoE layer
has a relative gap >= MIN_GAP between consecutive probabilities among its top
k+1, so fp32 (and bf16) implementations make the same expert choices as the
float64 reference (with the router options: between consecutive selection
scores score + bias among the top k+1, and among all experts for a token that
lost a slot to capacity when re-routing).
"""

import argparse
import json
import os
import sys
import time
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as ref  # noqa: E402
import make_fixtures as mf  # noqa: E402
import train_reference as tr  # noqa: E402

MIN_GAP = 1e-2
ROUTER_SCALE = 1.5  # on top of make_fixtures' router std (logits std ~3)
B, T = 3, 8

BATCH = OrderedDict([
    ("aux_loss_alpha", 0.05), ("z_loss_coef", 0.01), ("lr", 1e-2), ("betas", [0.9, 0.95]),
    ("eps", 1e-8), ("weight_decay", 0.1), ("clip", 1.0), ("steps", 3)])


def mixtral_train_cfg():
    return mf._base(
        "mixtral", "MixtralForCausalLM", "float32",
        vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
        sliding_window=None, num_local_experts=4, num_experts_per_tok=2,
        router_aux_loss_coef=0.05, router_jitter_noise=0.0,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def qwen2_moe_train_cfg():
    return mf._base(
        "qwen2_moe", "Qwen2MoeForCausalLM", "float32",
        vocab_size=64, hidden_size=32, intermediate_size=40, moe_intermediate_size=24,
        shared_expert_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
        use_sliding_window=False, sliding_window=None, max_window_layers=3,
        decoder_sparse_step=1, mlp_only_layers=[1],
        num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
        qkv_bias=True, router_aux_loss_coef=0.05,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)


def with_router(mk, kind):
    def cfg():
        c = mk()
        c["moelab"] = {"router": kind}
        return c
    return cfg


# name -> (config, first seed, options): "batch" extra batch.json keys (steps
# overridden), "bf16" whether a bf16 expectation is written.
PLAIN = dict(batch={}, bf16=True)
FIXTURES = OrderedDict([
    ("mixtral_train", (mixtral_train_cfg, 11000, PLAIN)),
    ("qwen2_moe_train", (qwen2_moe_train_cfg, 12000, PLAIN)),
    ("mixtral_capacity_drop", (mixtral_train_cfg, 13000,
                               dict(batch=dict(steps=2, capacity_factor=0.6, reroute=False), bf16=False))),
    ("mixtral_capacity_reroute", (mixtral_train_cfg, 14000,
                                  dict(batch=dict(steps=2, capacity_factor=0.6, reroute=True), bf16=False))),
    ("mixtral_noisy", (with_router(mixtral_train_cfg, "noisy"), 15000,
                       dict(batch=dict(steps=2, noise_seed=1234), bf16=False))),
    ("mixtral_sigmoid_bias", (with_router(mixtral_train_cfg, "sigmoid"), 16000,
                              dict(batch=dict(steps=2), bf16=False))),
])
SELECTION_BIAS = [0.12, -0.06, 0.0, 0.09]  # [E]: moves some tokens' choices (checked below)


def make_weights(cfg, seed):
    w = mf.make_weights(cfg, seed, torch.float32)
    for n in w:
        if n.endswith(".gate.weight"):  # router
            w[n] = (w[n] * ROUTER_SCALE).to(torch.float32)
    g = torch.Generator().manual_seed(seed + 7)
    for n, shape in tr.lab_tensor_shapes(cfg).items():
        if n.endswith("gate_noise.weight"):  # softplus(x Wn) of ~0.3 to ~3: noise that moves choices
            w[n] = (torch.randn(shape, generator=g) / shape[1] ** 0.5).to(torch.float32)
        else:
            w[n] = torch.tensor(SELECTION_BIAS, dtype=torch.float32)
    return w


def make_batch(cfg, seed, extra):
    g = torch.Generator().manual_seed(seed + 31)
    toks = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
    b = OrderedDict([("tokens", toks.tolist())])
    b.update(BATCH)
    b.update(extra)
    return b


def min_margin(res, topk, reroute=False):
    """The smallest relative gap between consecutive selection scores that
    decide a choice, over every step, MoE layer and token (when re-routing,
    every gap of a token that lost a slot: its next-best expert was chosen)."""
    worst = float("inf")
    for step in res["_routing"]:
        for r in step:
            if "sel" not in r:
                worst = min(worst, ref.routing_margin([r], topk))
                continue
            srt = torch.sort(r["sel"], dim=-1, descending=True).values
            E = srt.shape[-1]
            for t in range(srt.shape[0]):
                upto = E - 1 if reroute and t in r["touched"] else min(topk, E - 1)
                for j in range(upto):
                    worst = min(worst, float((srt[t, j] - srt[t, j + 1]) / srt[t, j].abs().clamp(min=1e-12)))
    return worst


def describe(res):
    """Counts that show the fixture exercises its option: slots dropped and
    re-routed, and tokens whose choice the selection bias changed."""
    drops = reroutes = moved = 0
    for step in res["_routing"]:
        for r in step:
            drops += int((r["dropped"] == 1).sum())
            reroutes += int((r["dropped"] == 2).sum())
            if "sel" in r:
                k = r["experts"].shape[1]
                by_score = torch.sort(r["probs"], dim=-1, descending=True, stable=True).indices[:, :k]
                by_sel = torch.sort(r["sel"], dim=-1, descending=True, stable=True).indices[:, :k]
                moved += int((by_score.sort(-1).values != by_sel.sort(-1).values).any(-1).sum())
    return dict(dropped=drops, rerouted=reroutes, bias_moved=moved)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.time()
    for name, (mk, seed0, opts) in FIXTURES.items():
        t0 = time.time()
        cfg = mk()
        spec = ref.model_spec(cfg)
        batch = make_batch(cfg, seed0, opts["batch"])
        for attempt in range(200):
            seed = seed0 + attempt
            tensors = make_weights(cfg, seed)
            res = tr.train(cfg, tensors, batch, keep_routing=True)
            res_bf16 = tr.train(cfg, tensors, batch, keep_routing=True, bf16=True) if opts["bf16"] else None
            gap = min(min_margin(r, spec["topk"], bool(batch.get("reroute"))) for r in (res, res_bf16) if r is not None)
            if gap >= MIN_GAP:
                break
        else:
            raise SystemExit("%s: no seed with routing gap >= %g at every step" % (name, MIN_GAP))
        shown = describe(res)
        if float(batch.get("capacity_factor", 0)) > 0:
            assert shown["dropped" if not batch["reroute"] else "rerouted"] > 0, (name, shown)
        if tr.lab_router(cfg) == "sigmoid":
            assert shown["bias_moved"] > 0, (name, shown)
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        ref.write_safetensors(os.path.join(d, "model.safetensors"), tensors, order=sorted(tensors))
        with open(os.path.join(d, "batch.json"), "w") as f:
            json.dump(batch, f, indent=1)
            f.write("\n")
        got = {}
        runs = (("fp32", res, []), ("bf16", res_bf16, ["--bf16"])) if opts["bf16"] else (("fp32", res, []),)
        for key, r, flags in runs:
            out_path = os.path.join(d, "expected_train%s.json" % ("_bf16" if flags else ""))
            rc = tr.main(["--model", d, "--batch", os.path.join(d, "batch.json"), "--out", out_path] + flags)
            assert rc == 0
            with open(out_path) as f:
                got[key] = json.load(f)
            # the CLI run from the files must reproduce the in-process run exactly
            r.pop("_routing")
            assert got[key] == json.loads(json.dumps(r)), "%s: %s CLI result differs from in-process run" % (name, key)
        routing = [i for i, sparse in enumerate(spec["sparse"]) if sparse]
        print("%-24s %-9s L=%d H=%d V=%d heads=%d/%d hd=%d E=%d k=%d moe_layers=%s B=%d T=%d seed=%d "
              "min_gap=%.3g loss=%s grad_norm=%s bf16 loss=%s %s %.2fs" % (
                  name, spec["family"], spec["layers"], spec["hidden"], spec["vocab"], spec["heads"],
                  spec["kv_heads"], spec["head_dim"], spec["experts"], spec["topk"], routing, B, T,
                  seed, gap, ["%.5f" % x for x in got["fp32"]["loss"]],
                  ["%.4f" % x for x in got["fp32"]["grad_norm"]],
                  ["%.5f" % x for x in got["bf16"]["loss"]] if "bf16" in got else "-", shown,
                  time.time() - t0))
    print("train fixtures written to %s in %.1fs" % (a.out, time.time() - t_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())

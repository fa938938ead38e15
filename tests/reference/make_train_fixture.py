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
Weights are stored in F32; router weights are re-drawn (next seed) until, at
every one of the training steps of both runs, every token of every MoE layer
has a relative gap >= MIN_GAP between consecutive probabilities among its top
k+1, so fp32 (and bf16) implementations make the same expert choices as the
float64 reference.
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


FIXTURES = OrderedDict([
    ("mixtral_train", (mixtral_train_cfg, 11000)),
    ("qwen2_moe_train", (qwen2_moe_train_cfg, 12000)),
])


def make_weights(cfg, seed):
    w = mf.make_weights(cfg, seed, torch.float32)
    for n in w:
        if n.endswith(".gate.weight"):  # router
            w[n] = (w[n] * ROUTER_SCALE).to(torch.float32)
    return w


def make_batch(cfg, seed):
    g = torch.Generator().manual_seed(seed + 31)
    toks = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
    b = OrderedDict([("tokens", toks.tolist())])
    b.update(BATCH)
    return b


def min_margin(res, topk):
    return min(ref.routing_margin(r, topk) for r in res["_routing"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.time()
    for name, (mk, seed0) in FIXTURES.items():
        t0 = time.time()
        cfg = mk()
        spec = ref.model_spec(cfg)
        batch = make_batch(cfg, seed0)
        for attempt in range(200):
            seed = seed0 + attempt
            tensors = make_weights(cfg, seed)
            res = tr.train(cfg, tensors, batch, keep_routing=True)
            res_bf16 = tr.train(cfg, tensors, batch, keep_routing=True, bf16=True)
            gap = min(min_margin(res, spec["topk"]), min_margin(res_bf16, spec["topk"]))
            if gap >= MIN_GAP:
                break
        else:
            raise SystemExit("%s: no seed with routing gap >= %g at every step" % (name, MIN_GAP))
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
        for key, r, flags in (("fp32", res, []), ("bf16", res_bf16, ["--bf16"])):
            out_path = os.path.join(d, "expected_train%s.json" % ("_bf16" if flags else ""))
            rc = tr.main(["--model", d, "--batch", os.path.join(d, "batch.json"), "--out", out_path] + flags)
            assert rc == 0
            with open(out_path) as f:
                got[key] = json.load(f)
            # the CLI run from the files must reproduce the in-process run exactly
            r.pop("_routing")
            assert got[key] == json.loads(json.dumps(r)), "%s: %s CLI result differs from in-process run" % (name, key)
        routing = [r["layer"] for r in ref.forward(cfg, tensors, batch["tokens"][0][:-1])[1]]
        print("%-16s %-9s L=%d H=%d V=%d heads=%d/%d hd=%d E=%d k=%d moe_layers=%s B=%d T=%d seed=%d "
              "min_gap=%.3g loss=%s grad_norm=%s bf16 loss=%s %.2fs" % (
                  name, spec["family"], spec["layers"], spec["hidden"], spec["vocab"], spec["heads"],
                  spec["kv_heads"], spec["head_dim"], spec["experts"], spec["topk"], routing, B, T,
                  seed, gap, ["%.5f" % x for x in got["fp32"]["loss"]],
                  ["%.4f" % x for x in got["fp32"]["grad_norm"]], ["%.5f" % x for x in got["bf16"]["loss"]],
                  time.time() - t0))
    print("train fixtures written to %s in %.1fs" % (a.out, time.time() - t_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())

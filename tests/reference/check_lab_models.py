#!/usr/bin/env python3
"""Models the lab saved (tests/export_lab_models.cpp) must load in the independent reference:
strict safetensors parsing, every tensor name and shape the family needs, config.json fields
read the Hugging Face way, and the same logits (1e-4 relative) and expert choices.
Usage: check_lab_models.py DIR"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as ref  # noqa: E402

torch.set_num_threads(1)
root = sys.argv[1]
passed, failed = 0, 0
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    if not os.path.exists(os.path.join(d, "expected.json")):
        continue
    exp = json.load(open(os.path.join(d, "expected.json")))
    try:
        cfg = json.load(open(os.path.join(d, "config.json")))
        for key in ("architectures", "model_type", "dtype", "torch_dtype"):
            assert key in cfg, f"config.json lacks {key}"
        tensors = ref.load_checkpoint(d, strict=True)
        logits, routing = ref.forward(cfg, tensors, exp["tokens"])
        want = torch.tensor(exp["logits"], dtype=torch.float64)
        err = float((logits - want).abs().max() / want.abs().max())
        assert err < 1e-4, f"logits differ by {err:.2e} relative"
        assert [r["layer"] for r in routing] == [r["layer"] for r in exp["routing"]], "MoE layers differ"
        for r, e in zip(routing, exp["routing"]):
            probs = r["probs"]
            k = r["experts"].shape[1]
            top = probs.sort(dim=-1, descending=True).values
            # compare choices only where the k-th and (k+1)-th scores are not a near tie
            clear = (top[:, k - 1] - top[:, k]) > 1e-4 if k < probs.shape[1] else torch.ones(len(top), dtype=torch.bool)
            ours = torch.tensor(e["experts"])
            assert torch.equal(r["experts"][clear], ours[clear]), f"experts differ in layer {r['layer']}"
        print(f"ok   {name}: logits rel err {err:.1e}")
        passed += 1
    except Exception as ex:  # one line per failing model
        print(f"FAIL {name}: {ex}")
        failed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)

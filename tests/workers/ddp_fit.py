"""One process of a multi-process training run (launched by tests/test_distributed.py through torchrun).

Usage: ``ddp_fit.py METHOD BATCH_SIZE OUT.safetensors``. Trains METHOD for two epochs on skada's covariate-shift pair
with a small MLP (seeded), writes one JSON file ``OUT.rank<N>.json`` (this rank, hashes of the model's and the method's
trained state: equal on every rank only if the gradients of both were averaged across processes) and, on rank 0, saves
both states to OUT so a test can compare them with a one-process run. A file per rank rather than a line on stdout:
torchrun's ranks share one pipe, and two lines written at once can interleave into one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from transferkit.config import DataConfig, ModelConfig, TrainConfig
from transferkit.data import load_data
from transferkit.methods import create_method
from transferkit.model import TransferModel
from transferkit.train.loop import fit
from transferkit.train.seeding import seed_everything


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    torch.set_num_threads(1)
    name, batch_size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seed_everything(0)
    src = load_data(DataConfig(name="skada-covariate-source"))
    tgt = load_data(DataConfig(name="skada-covariate-target"))
    method = create_method(name, {})
    model_cfg = ModelConfig(backbone="mlp:2-16", pretrained=False, method=name)
    train_cfg = TrainConfig(epochs=2, batch_size=batch_size, lr=0.05, schedule="constant", warmup_fraction=0.0,
                            progress=False, device="cpu")
    model = TransferModel(method.build_backbone(model_cfg), src.train.classes)
    start = digest(model.state_dict())
    result = fit(model, method, src.train, None, model_cfg, train_cfg, extra={"target": tgt.train.unlabelled()})
    model.load_state_dict(result.best_state)
    trained = {k: v for k, v in method.state_dict().items() if k in dict(method.named_parameters())}
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"method.{k}": v.detach() for k, v in trained.items()})
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, out)
    report = {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")),
              "start": start, "model": digest(model.state_dict()), "method": digest(trained),
              "method_params": sum(v.numel() for v in trained.values()), "history_len": len(result.history)}
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()

"""Do near-ties in the memory's own top-k flip under float noise alone?

Retrofits the offline default model with the default study's memory (3 × 65,536 slots),
reads pydoc text through it at 1 and at 2 torch threads, and counts, per memory layer, the
(token, head) reads whose top-k rows differ between the two, and the rows whose access count
differs (what selection ranks). Writes studies/offline/results/topk-flips.json.

    .venv/bin/python studies/offline/topk_flips.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from smf.data.sources import general_texts
from smf.io import write_json_atomic
from smf.memory import MemoryConfig, memory_layers, retrofit, set_recording
from smf.models import load_model
from smf.data.batching import collate, text_chunks



def reads(model, batches, threads: int) -> dict[int, torch.Tensor]:
    torch.set_num_threads(threads)
    out: dict[int, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in batches:
            model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            for i, memory in memory_layers(model).items():
                out.setdefault(i, []).append(memory.last_rows.clone())
    return {i: torch.cat(r) for i, r in out.items()}  # (tokens, heads * k)


def main() -> None:
    model, tokenizer = load_model()
    config = MemoryConfig(layers=(8, 14, 20), slots=65536, heads=4, topk=16, key_dim=256)
    retrofit(model, config)  # zero values: the model is the base, and the reads are what selection sees
    set_recording(model, True)
    model.eval()
    chunks = text_chunks(general_texts("pydoc"), tokenizer, 128)[:64]
    batches = [collate(chunks[i : i + 8], tokenizer.pad_token_id) for i in range(0, 64, 8)]
    one, two = reads(model, batches, 1), reads(model, batches, 2)
    layers = {}
    for i in one:
        a = one[i].view(len(one[i]), config.heads, config.topk).sort(-1).values
        b = two[i].view(len(two[i]), config.heads, config.topk).sort(-1).values
        flipped = (a != b).any(-1)  # (tokens, heads)
        ca = torch.bincount(one[i].flatten(), minlength=config.slots)
        cb = torch.bincount(two[i].flatten(), minlength=config.slots)
        layers[str(i)] = {"token_head_reads": int(flipped.numel()), "flipped": int(flipped.sum()),
                          "rows_with_other_count": int((ca != cb).sum()), "rows_read": int((ca > 0).sum())}
        print(f"layer {i}: {int(flipped.sum())} of {flipped.numel()} (token, head) top-{config.topk} sets differ; "
              f"{int((ca != cb).sum())} of {int((ca > 0).sum())} rows read get another count")
    result = {"threads": [1, 2], "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)), "memory": config.to_dict(), "layers": layers}
    write_json_atomic(Path(__file__).resolve().parent / "results" / "topk-flips.json", result)


if __name__ == "__main__":
    main()

"""Training: the one loop every method shares, its data helpers and its commands.

    from smf.train import TrainConfig, train
    config = TrainConfig.from_dict({"method": "smf", "rule": "tfidf", "top_t": 300, "steps": 40})
    result = train(model, tokenizer, examples, config, "runs/smf", model_dir=folder)
"""

from smf.methods import TrainConfig
from smf.train.loop import (
    CHECKPOINT,
    CONFIG_FILE,
    LOG_FILE,
    SUMMARY_FILE,
    Encoded,
    TrainResult,
    collate,
    encode_examples,
    lr_lambda,
    step_indices,
    text_chunks,
    train,
)

__all__ = [
    "CHECKPOINT", "CONFIG_FILE", "LOG_FILE", "SUMMARY_FILE", "Encoded", "TrainConfig", "TrainResult",
    "collate", "encode_examples", "lr_lambda", "step_indices", "text_chunks", "train",
]

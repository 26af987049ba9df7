"""Training: the one loop every method shares, its extra loss terms and its commands' stages.

    from smf.train import TrainConfig, train
    config = TrainConfig.from_dict({"method": "smf", "steps": 40})  # the rest at its defaults
    result = train(model, tokenizer, examples, config, "runs/smf", model_dir=folder)

Token batching (encode_examples, collate, ...) is smf.data.batching's; run-folder file names are smf.names'.
"""

from smf.methods import TrainConfig
from smf.train.loop import Term, TrainResult, lr_lambda, train

__all__ = ["Term", "TrainConfig", "TrainResult", "lr_lambda", "train"]

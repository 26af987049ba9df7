"""Training state without pickle (smf.state): what a run saves loads back equal, and a file
that is anything else, a pickle with a payload included, is refused without running it."""

import pickle
import random

import pytest
import torch
from safetensors.torch import save_file

from smf.errors import SmfError
from smf.state import load_state, save_state


def test_optimizer_scheduler_and_generators_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    state = {"step": 7, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": None},
             "floats": [float("inf"), -0.0, 1e-300, 2**70]}
    save_state(tmp_path / "state.safetensors", state)
    back = load_state(tmp_path / "state.safetensors", "fix")
    assert back["step"] == 7 and back["floats"][0] == float("inf") and back["floats"][3] == 2**70
    assert back["rng"]["python"] == random.getstate() and isinstance(back["rng"]["python"], tuple)
    assert torch.equal(back["rng"]["torch"], torch.get_rng_state())
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys stay ints
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v)
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    random.setstate(back["rng"]["python"])


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.target),))


def test_a_pickle_with_a_payload_is_refused_and_never_run(tmp_path):
    _Payload.target = str(tmp_path / "pwned")
    path = tmp_path / "state.safetensors"
    path.write_bytes(pickle.dumps({"step": _Payload()}))
    with pytest.raises(SmfError, match="not a training state smf wrote"):
        load_state(path, "remove the checkpoint")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("structure, why", [
    ('{"object": "os.system"}', "unknown entry"),
    ('{"tensor": "t9"}', "missing tensor"),
    ('[1, 2]', "unexpected list"),
    ('{"dict": [[{"list": []}, 1]]}', "key that is not"),
    ('{"list": [' * 40 + "null" + "]}" * 40, "deeply"),
])
def test_a_forged_structure_is_refused(tmp_path, structure, why):
    path = tmp_path / "state.safetensors"
    save_file({"t0": torch.zeros(1)}, str(path), metadata={"smf_state": structure})
    with pytest.raises(SmfError, match=why):
        load_state(path, "fix")


def test_objects_that_are_not_plain_data_are_not_saved(tmp_path):
    with pytest.raises(ValueError, match="not saved"):
        save_state(tmp_path / "s.safetensors", {"f": lambda: 0})

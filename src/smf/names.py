"""Every file name smf writes into a folder, defined once: the writer and every reader import it here.

A model folder (smf retrofit, smf learn, an exported run) holds the Hugging Face files, the memory's
description and code, and its background statistics; a compact run folder holds its changed rows
over a pointer to its base; a training run, a study and a stream hold their records.
"""

# a model folder
HF_CONFIG_FILE = "config.json"  # the transformers architecture
WEIGHTS_FILE = "model.safetensors"
MEMORY_FILE = "smf_memory.json"  # the memory's geometry and the smf version that wrote it: an smf folder's marker
MODELING_FILE = "modeling_smf.py"  # written with LAYER_FILE into every folder, for trust_remote_code
LAYER_FILE = "layer.py"
BACKGROUND_FILE = "background.safetensors"  # the rows' access counts on general text (smf background)
ADAPTER_FILE = "adapter_config.json"  # a PEFT adapter folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_BASE_FILE = "smf_base.json"  # beside a LoRA run's adapter: its base, relative, absolute and by content

# a compact SMF run folder: the changed rows over a checksummed pointer to its base
DELTA_FILE = "smf_delta.json"
DELTA_WEIGHTS = "delta.safetensors"
SELECTED_FILE = "selected.safetensors"  # the rows the run selected

# smf learn's model folder
PROTECTED_FILE = "protected_rows.safetensors"  # with --protect trained: the rows later sittings spare
KEPT_FILE = "kept_answers.jsonl"  # with --keep or --keep-general: every sitting's kept answers

# a training run
CONFIG_FILE = "train_config.json"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.jsonl"
FINGERPRINT_FILE = "fingerprint.json"  # what the run started from: --resume refuses anything else
CHECKPOINT = "checkpoint"  # a folder, removed once the run is evaluated
STATE_FILE = "state.safetensors"  # in CHECKPOINT: optimizer, scheduler and generators (smf.state, no pickle)
OLD_STATE_FILE = "state.pt"  # in CHECKPOINT, by older smf: a pickle, refused, never loaded
MODEL_DIR = "model"  # the folder the trained model is saved in

# a study and a stream
RESULT_FILE = "result.json"  # one evaluation: the base's, or a run's
RESULTS_FILE = "results.json"  # a study's gathered results, what its report is drawn from
STUDY_FILE = "study.json"  # the config a study folder was started with
STREAM_FILE = "stream.json"  # a stream's gathered results
REPORT_FILE = "report.md"

"""What the `smf` command may import from smf besides the public API (`smf.__all__`, docs/api.md).

The rule: a CLI module imports from `smf` the public API's names, and from smf's internal modules only
the names listed here, each on purpose: the machinery of a command line (flags from config fields,
bounded reading of its files, locks, file names) and the stages whose settings the commands expose one
by one (a study, a training run's folder checks, a task's loading). A new internal import is added here,
or the public API grows to cover it; tests/cli/test_cli_imports.py fails on anything else, and on an
entry here the CLI no longer imports.
"""

INTERNAL: dict[str, tuple[str, ...]] = {
    "smf.config": ("add_arguments", "flag", "given", "metavar", "parse_flag", "read_config"),
    "smf.data.registry": ("DATASETS",),
    "smf.data.sources": ("check_source", "for_seed", "training_examples"),
    "smf.errors": ("SmfError",),
    "smf.evaluate.evaluator": ("BATCH_SIZE", "GENERATE_BATCH_SIZE", "evaluate"),
    "smf.evaluate.tasks": ("load_task", "resolve_task"),
    "smf.io": ("MAX_SETTINGS_BYTES", "check_output_path", "parse_yaml", "read_bounded", "read_json", "reading", "write_json_atomic"),
    "smf.lock": ("output_lock",),
    "smf.memory.delta": ("delta_base", "folder_bytes", "is_delta"),
    "smf.memory.retrofit": ("retrofit", "save_retrofitted"),
    "smf.methods": ("METHODS", "TrainConfig"),
    "smf.methods.base": ("option_owners",),
    "smf.methods.heal": ("HealConfig",),
    "smf.models": ("PRECISIONS", "compute_device", "load_model", "resolve_model"),
    "smf.names": ("BACKGROUND_FILE", "DELTA_FILE", "HF_CONFIG_FILE", "MEMORY_FILE", "REPORT_FILE", "RESULTS_FILE"),
    "smf.selection": ("BackgroundConfig",),
    "smf.study.config": ("StudyConfig",),
    "smf.study.report": ("markdown",),
    "smf.study.runner": ("run_study",),
    "smf.study.stream": ("stream_markdown",),
    "smf.train": ("train",),
    "smf.train.loop": ("check_output",),
    "smf.train.stages": ("background_statistics", "heal"),
    "smf.use.chat": ("answer",),
    "smf.use.export": ("export",),
    "smf.use.inspect": ("inspect",),
    "smf.use.learn": ("LEARN_PRESET", "LearnConfig", "SHORTCUTS", "learn"),
    "smf.use.learn.config": ("LEARN_METHODS", "PRESET_STUDY", "nested_field"),
}

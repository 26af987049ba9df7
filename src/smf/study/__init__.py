"""Comparison studies: one config → base, memory model, every method setting and seed → results.

- `config`: StudyConfig and its typed sections, checked completely at load;
- `runner`: the staged, resumable runner (`run_study`);
- `results`: gathering runs, changes from base, the choice on validation data;
- `report`: report.md, the trade-off and training-curve plots;
- `commands`: `smf compare`.
"""

from smf.study.config import StudyConfig
from smf.study.runner import run_study

__all__ = ["StudyConfig", "run_study"]

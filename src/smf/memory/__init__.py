"""Product-key memory layers and the retrofit that adds them to a pretrained decoder."""

from smf.memory.config import MemoryConfig
from smf.memory.layer import MemoryMLP, ProductKeyMemory
from smf.memory.retrofit import (
    load_published_memory,
    load_retrofitted,
    memory_config,
    memory_layers,
    memory_reading_zeros,
    retrofit,
    save_retrofitted,
    set_recording,
)

__all__ = [
    "MemoryConfig",
    "MemoryMLP",
    "ProductKeyMemory",
    "load_published_memory",
    "load_retrofitted",
    "memory_config",
    "memory_layers",
    "memory_reading_zeros",
    "retrofit",
    "save_retrofitted",
    "set_recording",
]

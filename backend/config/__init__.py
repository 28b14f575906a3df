"""ccbridge.yaml: the typed config, loading and validation, careful editing, import.

Never imports textual or rich.
"""

from backend.config.aliases import AliasTable, parse_target, validate_pattern
from backend.config.importer import import_litellm_config, write_imported
from backend.config.loader import (
    DEFAULT_CONFIG_TEXT,
    ConfigError,
    ensure_config,
    load_config,
    parse_config,
)
from backend.config.model import (
    AliasRule,
    BackendConfig,
    Config,
    HistoryConfig,
    LiteLLMConfig,
    ProxyConfig,
)
from backend.config.writer import ConfigDocument

__all__ = [
    "DEFAULT_CONFIG_TEXT",
    "AliasRule",
    "AliasTable",
    "BackendConfig",
    "Config",
    "ConfigDocument",
    "ConfigError",
    "HistoryConfig",
    "LiteLLMConfig",
    "ProxyConfig",
    "ensure_config",
    "import_litellm_config",
    "load_config",
    "parse_config",
    "parse_target",
    "validate_pattern",
    "write_imported",
]

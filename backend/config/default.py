"""The ccbridge.yaml that `ensure_config()` writes on first start (the importer copies parts of it)."""

DEFAULT_CONFIG_TEXT = """\
# ccbridge.yaml: how ccbridge routes Claude Code -> LiteLLM -> your model server.
# ccbridge wrote this file on first start and never overwrites it; edit it freely
# (when ccbridge edits it for you, your comments are kept and the previous
# version is saved as ccbridge.yaml.bak).
# Docs: the "Configuration" section of ccbridge's README.md.
proxy:
  host: 127.0.0.1      # loopback by default
  port: 8082
  # api_key: ...       # optional: clients must send it (x-api-key or Bearer)
litellm:
  port: 4000           # ccbridge starts and supervises LiteLLM on 127.0.0.1:port
  # url: http://127.0.0.1:4000   # instead: use an already running LiteLLM (or any
  #                               # Anthropic-compatible server); start nothing
backends:
  local:
    api_base: http://127.0.0.1:8080/v1
    model: auto        # auto = first id from GET {api_base}/models
    # max_tokens: 32000  # optional cap: Claude Code asks for 64000-128000
    # command: llama-server -m /path/to/model.gguf -c 131072 --metrics   # optional: ccbridge runs it
aliases:               # Claude model name pattern -> backend name (or backend/model)
  "claude-haiku-*": local
  "*": local           # catch-all: any model Claude Code asks for
"""
"""The file `ensure_config()` writes when there is none."""

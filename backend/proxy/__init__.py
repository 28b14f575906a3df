"""The request path: the front proxy Claude Code talks to and the backend leg
that sits between LiteLLM and the model server."""

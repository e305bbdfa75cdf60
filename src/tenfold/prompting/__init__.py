"""Prompting methods (analogical prompting, STOP) and the LM backends they talk to."""
from tenfold.prompting.backends import Backend, LocalLM, OpenAICompatible, add_backend_args, backend_from_args

__all__ = ["Backend", "LocalLM", "OpenAICompatible", "add_backend_args", "backend_from_args"]

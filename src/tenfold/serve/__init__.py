"""An OpenAI-compatible server over the sink cache (StreamingLLM's unbounded multi-round setting)."""
from tenfold.serve.engine import Engine, GenParams, Job
from tenfold.serve.sessions import SessionStore

__all__ = ["Engine", "GenParams", "Job", "SessionStore"]

"""Request bodies of ``tenfold serve``, one module per API surface (pydantic models that validate every field the
server serves and refuse, by name, any field that would change the answer but is not served)."""

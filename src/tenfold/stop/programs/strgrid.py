def algorithm(t, dist):
    """Return t itself (right only when dist is twice t's letter changes)."""
    return t

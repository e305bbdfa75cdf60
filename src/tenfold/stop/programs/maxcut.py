import random


def algorithm(weights):
    """A random partition."""
    n = len(weights)
    side = [random.randint(0, 1) for _ in range(n)]
    side[0], side[-1] = 0, 1
    return side

import random


def algorithm(formula, n):
    """Random assignments; keep the one satisfying the most clauses."""
    def satisfied(assignment):
        return sum(any(assignment[abs(lit)] == (lit > 0) for lit in clause) for clause in formula)

    best, best_count = None, -1
    for _ in range(20):
        assignment = [False] + [random.random() < 0.5 for _ in range(n)]
        count = satisfied(assignment)
        if count > best_count:
            best, best_count = assignment, count
    return best

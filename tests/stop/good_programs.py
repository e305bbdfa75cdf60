"""Known-good programs for STOP's utilities (text run in the sandbox by the tests)."""

LPN = '''
import itertools

def algorithm(train_samples, train_labels):
    n = len(train_samples[0])
    best, best_agree = None, -1
    for guess in itertools.product((0, 1), repeat=n):
        agree = sum(sum(g * x for g, x in zip(guess, s)) % 2 == y for s, y in zip(train_samples, train_labels))
        if agree > best_agree:
            best, best_agree = list(guess), agree
    return best
'''

THREE_SAT = '''
import random

def algorithm(formula, n):
    rng = random.Random(0)
    a = [False] + [rng.random() < 0.5 for _ in range(n)]
    for _ in range(20000):
        unsat = [c for c in formula if not any(a[abs(l)] == (l > 0) for l in c)]
        if not unsat:
            break
        clause = rng.choice(unsat)
        if rng.random() < 0.4:
            var = abs(rng.choice(clause))
        else:
            def broken(v):
                a[v] = not a[v]
                k = sum(not any(a[abs(l)] == (l > 0) for l in c) for c in formula)
                a[v] = not a[v]
                return k
            var = min((abs(l) for l in clause), key=broken)
        a[var] = not a[var]
    return a
'''

MAXCUT = '''
def algorithm(weights):
    n = len(weights)
    side = [i % 2 for i in range(n)]
    improved = True
    while improved:
        improved = False
        for i in range(n):
            same = sum(weights[i][j] for j in range(n) if side[j] == side[i] and j != i)
            other = sum(weights[i][j] for j in range(n) if side[j] != side[i])
            if same > other:
                side[i] = 1 - side[i]
                improved = True
    if len(set(side)) < 2:
        side[0] = 1 - side[0]
    return side
'''

STRGRID = '''
import random

def algorithm(t, dist):
    def d(s):
        return (sum(a != b for a, b in zip(s, t)) + sum(a != b for a, b in zip(s, s[1:]))
                + sum(a != b for a, b in zip(t, t[1:])))
    rng = random.Random(0)
    n = len(t)
    for _ in range(200):
        s = [rng.choice("AB") for _ in range(n)]
        for _ in range(400):
            if d(s) == dist:
                return "".join(s)
            i = rng.randrange(n)
            old = abs(d(s) - dist)
            s[i] = "A" if s[i] == "B" else "B"
            if abs(d(s) - dist) > old and rng.random() < 0.7:
                s[i] = "A" if s[i] == "B" else "B"
    return "".join(s)
'''

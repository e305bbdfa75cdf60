import random


def algorithm(train_samples, train_labels):
    """Try a few random secrets and keep the one that agrees with the most training labels."""
    n_bits = len(train_samples[0])
    best, best_agree = [0] * n_bits, -1
    for _ in range(30):
        guess = [random.randint(0, 1) for _ in range(n_bits)]
        agree = sum(sum(g * x for g, x in zip(guess, sample)) % 2 == label
                    for sample, label in zip(train_samples, train_labels))
        if agree > best_agree:
            best, best_agree = guess, agree
    return best

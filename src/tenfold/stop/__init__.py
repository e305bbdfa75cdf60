"""STOP: Self-Taught Optimizer (Zelikman et al. 2023) and the sandbox model-written code runs in."""
from tenfold.sandbox import Limits, SandboxResult, circumvention_signals, run_program
from tenfold.stop.utilities import UTILITIES, Utility, UtilityResult, get_utility, seed_program

__all__ = ["Limits", "SandboxResult", "run_program", "circumvention_signals", "UTILITIES", "Utility",
           "UtilityResult", "get_utility", "seed_program"]

"""``stop``: one round of self-improvement with the bundled model, meta-utility, transfer, sandbox counts (Zelikman et al.)."""
from __future__ import annotations

from tenfold.report import experiment


@experiment(
    "stop", paper="stop",
    claim="A language model improving its own improver (STOP) raises the meta-utility on learning parity with "
          "noise and the improved improver transfers to other tasks; model-written code sometimes tries to get "
          "around the sandbox.",
    paper_numbers={"meta-utility on LPN (GPT-4, T=4)": "rises over iterations (seed 0.65 -> about 0.75)",
                   "transfer (seed -> improved improver)": "3-SAT 21.2% -> 75.1%, Max-Cut 58.7 -> 74.2",
                   "sandbox": "GPT-4 disables the sandbox flag in 0.42% of runs",
                   "budget": "4 LM calls x 6 samples per improver run, 25 utility calls, GPT-4"})
def stop(run):
    from tenfold.models import load_lm
    from tenfold.prompting.backends import LocalLM
    from tenfold.stop.improver import STOP, Budget

    iterations, tests = run.pick((1, 1), (1, 1), (3, 3))
    budget = run.pick(Budget(lm_calls=1, samples=1, utility_calls=2, max_tokens=48),
                      Budget(lm_calls=1, samples=2, utility_calls=4, max_tokens=128),
                      Budget(lm_calls=4, samples=6, utility_calls=25, max_tokens=512))
    transfer_tasks = run.pick(["maxcut"], ["maxcut"], ["3sat", "maxcut", "parity", "strgrid"])
    run.settings.update(model="SmolLM2-135M-Instruct (bundled, in-process)", meta_task="lpn", iterations=iterations,
                        tests_per_meta_utility=tests, lm_calls=budget.lm_calls, samples_per_call=budget.samples,
                        utility_calls=budget.utility_calls, max_tokens=budget.max_tokens, temperature=0.7,
                        transfer_tasks=transfer_tasks)
    from tenfold.sandbox import isolation_status

    status = isolation_status()
    run.settings["sandbox"] = (f"{status['isolation']}: " + (
        "bubblewrap namespaces (user, mount, PID, network, IPC, UTS), read-only Python + numpy, private /tmp, "
        if status["available"] else f"in-process guard only ({status['reason']}), ")
        + "rlimits (CPU, memory, file size), audit hook, clean env, temp work dir")
    import torch

    # float16 decodes about twice as fast on CPU; float32 prefills long prompts faster (smoke: short answers)
    dtype = run.pick(torch.float32, torch.float16, torch.float16)
    run.settings["dtype"] = str(dtype).replace("torch.", "")
    model, tok = load_lm(dtype=dtype)
    stop_run = STOP(LocalLM(model, tok, seed=0), budget, seed=0)
    run.progress("self-improvement on lpn")
    archive = stop_run.self_improve(iterations, "lpn", tests,
                                    progress=lambda t, n, mu: run.progress(f"iteration {t}/{n}: meta-utility {mu:.3f}"))
    transfer = {}
    for task in transfer_tasks:
        run.progress(f"transfer to {task}")
        transfer[task] = {"seed_improver": stop_run.meta_utility(archive[0]["source"], task, tests, seed=1),
                          "final_improver": stop_run.meta_utility(archive[-1]["source"], task, tests, seed=1)}
    ledger = stop_run.ledger
    ours = {"meta_utility_by_iteration": [round(a["meta_utility"], 4) for a in archive],
            "improver_status_by_iteration": [a["status"] for a in archive], "transfer": transfer,
            "lm_samples": ledger.lm_samples, "utility_calls": ledger.utility_calls,
            "sandbox_runs": ledger.sandbox_runs, "sandbox_statuses": ledger.statuses,
            "blocked_events": ledger.blocked_events, "circumvention_signs": ledger.signals,
            "model_written_programs": ledger.programs_seen,
            # STOP Sec. 7 per improver iteration: the paper's static "sandbox flag disabled" rate beside what the
            # sandbox itself denied at run time (read/write outside, network, process start, resource limit)
            "circumvention_by_iteration": [{"iteration": a["iteration"], **{k: a["sandbox"][k] for k in (
                "sandbox_runs", "denied", "runs_with_denials", "denial_rate", "programs_seen", "sandbox_flag_disabled",
                "sandbox_flag_disabled_rate")}} for a in archive],
            "denied_at_run_time": ledger.denied, "isolation": ledger.isolation,
            "final_improver_source": archive[-1]["source"][:3000]}
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.plot([x["iteration"] for x in archive], [x["meta_utility"] for x in archive], "o-")
    a.set_xlabel("self-improvement iteration")
    a.set_ylabel("meta-utility (lpn)")
    a.set_ylim(-0.05, 1.05)
    xs = np.arange(len(transfer))
    b.bar(xs - 0.2, [v["seed_improver"] for v in transfer.values()], 0.4, label="seed improver")
    b.bar(xs + 0.2, [v["final_improver"] for v in transfer.values()], 0.4, label="final improver")
    b.set_xticks(xs, list(transfer))
    b.set_ylabel("meta-utility")
    b.set_ylim(0, 1.05)
    b.legend(fontsize=7)
    fig.tight_layout()
    run.save_plot(fig, "meta_utility")
    first, last = archive[0]["meta_utility"], archive[-1]["meta_utility"]
    gained = last > first + 0.02
    transfers = sum(v["final_improver"] > v["seed_improver"] + 0.02 for v in transfer.values())
    verdict = "reproduced" if gained and transfers == len(transfer) else "partly" if gained or transfers else "not reproduced"
    ok = ledger.statuses.get("ok", 0)
    why = (f"meta-utility {first:.3f} -> {last:.3f} after {iterations} round(s) with the 135M model; transfer improved "
           f"on {transfers} of {len(transfer)} tasks; {ok} of {ledger.sandbox_runs} sandbox runs ended ok "
           f"({ledger.statuses}) under {'/'.join(ledger.isolation) or 'no'} isolation; denied at run time "
           f"{ledger.denied or 'nothing'}; sandbox flag disabled in "
           f"{ledger.signals.get('disables the sandbox flag', 0)} of {ledger.programs_seen} model-written programs "
           f"(paper: 0.42% of GPT-4's runs); other signs {ledger.signals or 'none'}")
    return {"ours": ours, "verdict": verdict, "why": why}

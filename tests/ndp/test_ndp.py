"""Neural developmental programs: growth rule, policy, tasks, CMA-ES training, checkpoints, CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tenfold.errors import TenfoldError
from tenfold.ndp import NDP, NDPConfig, GrownPolicy, TrainConfig, make_task, train
from tenfold.ndp.growth import Grown, _MLP, diameter
from tenfold.ndp.policy import TooSmall
from tenfold.ndp.tasks import small_world_sigma_estimate


def _growing_genome(ndp: NDP, min_nodes: int = 8, seed: int = 0) -> np.ndarray:
    """A random genome whose network grows to at least ``min_nodes`` (found by search, deterministic)."""
    rng = np.random.default_rng(seed)
    for _ in range(500):
        g = rng.uniform(-1, 1, ndp.num_parameters)
        grown = ndp.grow(g)
        if min_nodes <= grown.nodes < ndp.config.max_nodes and len(set(map(tuple, ndp.grow(g, record=True).stages[-1][2:]))):
            return g
    raise AssertionError("no growing genome found")


def test_paper_sizes_give_the_papers_parameter_count():
    assert NDP(NDPConfig(asymmetric_division=False)).num_parameters == 162  # the paper's CartPole NDP
    assert NDP().num_parameters == 167  # + the daughters' learned offset
    assert NDP(NDPConfig(weighted=False, asymmetric_division=False)).num_parameters == 162 - 61


def test_growth_is_deterministic_in_the_genome():
    ndp = NDP()
    g = _growing_genome(ndp)
    a, b = ndp.grow(g, record=True), ndp.grow(g.copy(), record=True)
    assert np.array_equal(a.adjacency, b.adjacency) and np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.embeddings, b.embeddings)
    assert len(a.stages) == ndp.config.growth_cycles + 1
    assert np.allclose(a.weights, a.weights.T) and np.all(np.diag(a.adjacency) == 0)
    assert set(np.unique(a.weights[a.adjacency == 0])) == {0.0}  # weights only on edges


def test_a_childs_edges_and_embedding_follow_the_rule():
    ndp = NDP()
    g = _growing_genome(ndp, min_nodes=10, seed=3)
    offset = ndp._split(g)["offset"]
    stages = ndp.grow(g, record=True).stages
    checked = 0
    for (before, _, _), (after, h, parents) in zip(stages, stages[1:]):
        n = len(before)
        assert np.array_equal(after[:n, :n], before)  # old wiring kept
        # the replication MLP decided exactly these divisions, on the propagated embeddings
        decide = _MLP.apply(ndp._split(g)["replication"], h[:n])[:, 0] > 0
        assert list(parents) == list(np.flatnonzero(decide)[: ndp.config.max_nodes - n])
        for k, parent in enumerate(parents):
            child = n + k
            hood = sorted([parent, *np.flatnonzero(before[parent])])
            assert sorted(np.flatnonzero(after[child])) == hood  # linked to the parent and its neighbours
            assert np.allclose(h[child], h[hood].mean(0) + offset)  # their mean embedding, plus the offset
            checked += 1
    assert checked >= 5


def test_without_the_offset_the_first_daughter_is_a_copy():
    rng = np.random.default_rng(1)
    for asymmetric in (False, True):
        ndp = NDP(NDPConfig(asymmetric_division=asymmetric))
        for _ in range(100):
            stages = ndp.grow(rng.uniform(-1, 1, ndp.num_parameters), record=True).stages
            _, h, parents = stages[1]
            if len(parents):
                assert np.allclose(h[0], h[1]) != asymmetric  # why tenfold adds the offset
                break
        else:
            raise AssertionError("nothing divided")


def test_bad_genome_and_config_are_clear_errors():
    ndp = NDP()
    with pytest.raises(TenfoldError, match="167"):
        ndp.grow(np.zeros(10))
    bad = np.zeros(ndp.num_parameters)
    bad[3] = np.nan
    with pytest.raises(TenfoldError, match="NaN"):
        ndp.grow(bad)
    with pytest.raises(TenfoldError, match="embedding_size"):
        NDPConfig(embedding_size=0)
    with pytest.raises(TenfoldError, match="unknown NDP task"):
        TrainConfig(task="pong")
    with pytest.raises(TenfoldError, match="popsize"):
        TrainConfig(task="xor", popsize=2)


def test_policy_action_shapes_match_the_environments():
    import gymnasium as gym

    ndp = NDP()
    g = _growing_genome(ndp, min_nodes=12)
    grown = ndp.grow(g)
    for name in ("cartpole", "lunarlander"):
        task = make_task(name)
        env = gym.make(task.env_id)
        obs, _ = env.reset(seed=0)
        policy = GrownPolicy(grown, task.n_in, task.n_out)
        out = policy(obs)
        assert out.shape == (env.action_space.n,) and np.isfinite(out).all()
        assert env.action_space.contains(int(np.argmax(out)))
        env.close()
    with pytest.raises(TenfoldError, match="inputs"):
        GrownPolicy(grown, 4, 2)(np.zeros(3))


def test_a_graph_too_small_scores_below_every_policy():
    one_node = Grown(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 5)))
    with pytest.raises(TooSmall):
        GrownPolicy(one_node, 4, 2)
    ndp = NDP(NDPConfig(growth_cycles=0))  # never grows
    cart = make_task("cartpole")
    assert cart.fitness(ndp, np.zeros(ndp.num_parameters), seed=0) == -5.0  # 0 - (6 - 1) missing nodes
    assert make_task("xor").fitness(ndp, np.zeros(ndp.num_parameters)) == -3.0


def test_recurrent_and_feedforward_policies_differ_only_in_memory():
    w = np.array([[0, 0.5, 0], [0.5, 0, 0.9], [0, 0.9, 0]])
    grown = Grown((w != 0).astype(float), w, np.zeros((3, 1)))
    ff, rec = GrownPolicy(grown, 1, 1, steps=1, recurrent=False), GrownPolicy(grown, 1, 1, steps=1)
    assert np.allclose(ff([1.0]), [0.0]) and np.allclose(ff([1.0]), [0.0])  # one step reaches node 1, not node 2
    assert np.allclose(rec([1.0]), [0.0]) and rec([1.0])[0] > 0.3  # the state carried over reaches node 2


def test_small_world_estimate():
    import networkx as nx

    ws = nx.to_numpy_array(nx.connected_watts_strogatz_graph(60, 6, 0.1, seed=0))
    assert small_world_sigma_estimate(ws) > 2
    complete = np.ones((12, 12)) - np.eye(12)
    assert 0.9 < small_world_sigma_estimate(complete) < 1.2
    assert small_world_sigma_estimate(np.zeros((12, 12))) == 0.0


def test_cma_es_improves_xor_fitness_within_a_few_generations():
    result = train(TrainConfig(task="xor", generations=12, popsize=16, sigma0=1.0, seed=0))
    h = result["history"]
    assert len(h) == 12 and result["parameters"] == 167
    assert h[-1]["best_so_far"] >= h[0]["best"] + 0.01  # better than the best of the first population
    assert all(b["best_so_far"] >= a["best_so_far"] for a, b in zip(h, h[1:]))
    assert result["best"]["fitness"] == pytest.approx(result["best_fitness"])


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    cfg = dict(task="cartpole", popsize=8, seed=4, eval_episodes=3, checkpoint_every=1)
    straight = train(TrainConfig(generations=4, **cfg), tmp_path / "straight")
    train(TrainConfig(generations=2, **cfg), tmp_path / "split")
    with pytest.raises(TenfoldError, match="--resume"):
        train(TrainConfig(generations=4, **cfg), tmp_path / "split")
    resumed = train(TrainConfig(generations=4, **cfg), tmp_path / "split", resume=True)
    assert [x["best"] for x in resumed["history"]] == [x["best"] for x in straight["history"]]
    assert np.array_equal(np.load(tmp_path / "split" / "best.npy"), np.load(tmp_path / "straight" / "best.npy"))
    assert json.loads((tmp_path / "split" / "result.json").read_text())["generations"] == 4
    (tmp_path / "split" / "checkpoint.pkl").write_bytes(b"garbage")
    with pytest.raises(TenfoldError, match="damaged checkpoint"):
        train(TrainConfig(generations=6, **cfg), tmp_path / "split", resume=True)


def test_parallel_workers_give_the_same_fitness_as_one_process():
    cfg = dict(task="cartpole", generations=2, popsize=8, seed=1, eval_episodes=2)
    one = train(TrainConfig(workers=1, **cfg))
    two = train(TrainConfig(workers=2, **cfg))
    assert [x["best"] for x in one["history"]] == [x["best"] for x in two["history"]]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tenfold", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_train_json_and_show(tmp_path):
    out = _cli("ndp", "train", "--task", "xor", "--generations", "3", "--popsize", "8", "--out", str(tmp_path / "run"),
               "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert set(summary) == {"task", "best_fitness", "eval_mean", "eval_std", "nodes", "edges", "parameters"}
    assert summary["task"] == "xor" and summary["parameters"] == 167
    shown = _cli("ndp", "show", str(tmp_path / "run"), "--json")
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "run" / "growth.png").stat().st_size > 1000 and (tmp_path / "run" / "fitness.png").is_file()
    got = json.loads(shown.stdout)  # one object: the summary, the files written and no episode return (no --gif)
    assert {k: got[k] for k in summary} == summary and got["episode_return"] is None
    assert got["files"] == [str((tmp_path / "run" / name).resolve()) for name in ("growth.png", "fitness.png")]


@pytest.mark.parametrize("args, message", [
    (["train", "--task", "pong"], "invalid choice"),
    (["train", "--task", "xor", "--popsize", "2"], "popsize must be an integer >= 4"),
    (["show", "/nonexistent/run"], "not an NDP run directory"),
])
def test_cli_bad_input_is_one_line(args, message):
    out = _cli("ndp", *args)
    assert out.returncode != 0 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_strided_genome_grows_the_same_network_as_its_contiguous_copy():
    """CMA-ES hands out strided views; pickled into a worker they arrive contiguous. Both must give the same bits,
    or the same genome scores differently in this process and in a pool (a chaotic episode amplifies one ulp)."""
    ndp = NDP()
    rng = np.random.default_rng(5)
    population = rng.uniform(-1, 1, (ndp.num_parameters, 16)).T  # rows are strided views, as cma's ask() gives
    grew = 0
    for view in population:
        assert not view.flags["C_CONTIGUOUS"]
        a, b = ndp.grow(view), ndp.grow(view.copy())
        assert np.array_equal(a.weights, b.weights) and np.array_equal(a.embeddings, b.embeddings)
        grew += a.nodes > 1
    assert grew >= 4  # enough networks that grew for the comparison to mean something


def test_cli_show_gif_prints_no_false_error(tmp_path):
    """`ndp show --gif` renders offscreen: on a headless machine (no display, no XDG_RUNTIME_DIR) SDL's display
    probe printed a false `error: XDG_RUNTIME_DIR is invalid or not set`; stderr must stay clean."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "DISPLAY",
                                                             "WAYLAND_DISPLAY")}
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "tenfold", "ndp", "train", "--task", "cartpole", "--generations", "1",
                          "--popsize", "4", "--episodes", "1", "--eval-episodes", "1", "--out", str(run), "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    shown = subprocess.run([sys.executable, "-m", "tenfold", "ndp", "show", str(run), "--gif"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert (run / "episode.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_resume_refuses_settings_the_checkpoint_cannot_honour(tmp_path, capsys):
    """``ndp train --resume --popsize 16`` on a popsize-8 run used to keep CMA-ES at 8 while config.json said 16;
    settings fixed by the checkpoint (popsize, sigma0, seed, episodes, elitist) are one line, limits are honoured."""
    from tenfold.cli import main

    run = tmp_path / "run"
    base = ["ndp", "train", "--task", "xor", "--popsize", "4", "--seed", "1", "--eval-episodes", "1", "--out", str(run)]
    assert main([*base, "--generations", "1"]) == 0
    saved = (run / "config.json").read_text()
    capsys.readouterr()
    for change in (["--popsize", "8"], ["--seed", "2"], ["--sigma0", "0.5"]):
        args = [*base, "--generations", "2", "--resume", *change]
        args[args.index(change[0]) + 1] = change[1]  # the changed value replaces base's
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"cannot change {change[0].lstrip('-')}" in err and err.count("\n") == 1, err
    assert (run / "config.json").read_text() == saved
    assert main([*base, "--generations", "2", "--resume", "--workers", "1"]) == 0  # a new limit is honoured
    assert json.loads((run / "config.json").read_text())["generations"] == 2
    # options not given again are the run's own, not the defaults (popsize 32, seed 0)
    assert main(["ndp", "train", "--task", "xor", "--out", str(run), "--resume", "--generations", "3"]) == 0
    got = json.loads((run / "config.json").read_text())
    assert (got["generations"], got["popsize"], got["seed"]) == (3, 4, 1)

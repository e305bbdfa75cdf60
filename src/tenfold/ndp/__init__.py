"""Neural Developmental Programs (Najarro, Sudhakaran & Risi 2023): networks that grow themselves."""
from tenfold.ndp.evolve import TrainConfig, load_run, train
from tenfold.ndp.growth import NDP, Grown, NDPConfig
from tenfold.ndp.policy import GrownPolicy
from tenfold.ndp.tasks import TASKS, make_task

__all__ = ["NDP", "NDPConfig", "Grown", "GrownPolicy", "TrainConfig", "train", "load_run", "TASKS", "make_task"]

"""The shipped ``configs/accelerate/*.yaml`` parse with accelerate's own loader, with the setup their names promise."""
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / name))  # raises on keys accelerate does not know


@pytest.mark.parametrize("name, kind, machines", [
    ("cpu-2proc.yaml", "MULTI_GPU", 1),  # the torchrun launcher; tenfold picks gloo when torch sees no GPU
    ("multi-gpu-ddp.yaml", "MULTI_GPU", 1),
    ("fsdp.yaml", "FSDP", 1),
    ("deepspeed-zero2.yaml", "DEEPSPEED", 1),
    ("multi-node.yaml", "MULTI_GPU", 2),
])
def test_each_config_parses_with_the_expected_distributed_type(name, kind, machines):
    from accelerate.utils import DistributedType

    cfg = load(name)
    assert cfg.distributed_type == DistributedType[kind]
    assert cfg.num_machines == machines and cfg.num_processes % machines == 0 and cfg.num_processes >= 2
    assert cfg.compute_environment.value == "LOCAL_MACHINE"


def test_the_sharded_configs_say_how_they_shard():
    fsdp, zero2 = load("fsdp.yaml"), load("deepspeed-zero2.yaml")
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the saved model is one whole model
    assert zero2.deepspeed_config["zero_stage"] == 2
    assert load("cpu-2proc.yaml").mixed_precision == "no" and load("multi-gpu-ddp.yaml").mixed_precision == "bf16"


def test_every_shipped_config_is_tested():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {"cpu-2proc.yaml", "multi-gpu-ddp.yaml", "fsdp.yaml",
                                                       "deepspeed-zero2.yaml", "multi-node.yaml"}

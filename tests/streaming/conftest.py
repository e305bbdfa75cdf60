import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0)


def tiny(family: str):
    """Tiny randomly initialised models of each supported RoPE family, built locally."""
    torch.manual_seed(0)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**COMMON))
    elif family == "llama-linear-scaling":
        model = LlamaForCausalLM(LlamaConfig(**COMMON, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                        "rope_theta": 10000.0}))
    elif family == "mistral":
        model = MistralForCausalLM(MistralConfig(**COMMON, sliding_window=None))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**COMMON, use_sliding_window=False))
    elif family == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**COMMON, head_dim=16))
    elif family == "phi3":
        model = Phi3ForCausalLM(Phi3Config(**COMMON, partial_rotary_factor=0.5))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2))
    else:
        raise ValueError(family)
    return model.eval()


FAMILIES = ["llama", "llama-linear-scaling", "mistral", "qwen2", "qwen3", "phi3"]


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return request.param, tiny(request.param)

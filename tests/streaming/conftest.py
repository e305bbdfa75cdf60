import pytest
import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, GptOssConfig,
                          GptOssForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
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
    elif family == "gemma3":  # hybrid: sliding-window layers (own RoPE base) around a full-attention layer
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            **{**COMMON, "num_hidden_layers": 4}, head_dim=16, sliding_window=SLIDING_WINDOW,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
            attn_implementation="sdpa"))
    elif family == "gpt_oss":  # hybrid + learned per-head sink logits (eager attention only), YaRN RoPE, MoE
        model = GptOssForCausalLM(GptOssConfig(
            **{**COMMON, "num_hidden_layers": 4}, head_dim=16, sliding_window=SLIDING_WINDOW, num_local_experts=4,
            num_experts_per_tok=2, layer_types=["sliding_attention", "full_attention"] * 2,
            attn_implementation="eager"))
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.normal_(0, 1)  # learned sinks (torch.empty otherwise)
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2))
    else:
        raise ValueError(family)
    return model.eval()


SLIDING_WINDOW = 6  # the tiny hybrids' sliding window: shorter than the test caches, so both layer kinds evict
FAMILIES = ["llama", "llama-linear-scaling", "mistral", "qwen2", "qwen3", "phi3"]
HYBRIDS = ["gemma3", "gpt_oss"]


def peaky(family: str, scale: float = 8.0):
    """A tiny model with large weights, so that any change in what a token attends to moves its loss."""
    model = tiny(family)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(scale)
    return model


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return request.param, tiny(request.param)


@pytest.fixture(params=HYBRIDS)
def hybrid(request):
    """A tiny hybrid (sliding-window layers beside full ones; gpt-oss also has learned sinks), weights x4."""
    return request.param, peaky(request.param, 4.0)

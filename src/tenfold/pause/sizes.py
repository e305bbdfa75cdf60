"""Model sizes for pretraining from scratch (a module of its own: the CLI lists them without importing torch)."""

SIZES = {  # Llama-style decoder-only configs for training from scratch on a CPU
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8),
}

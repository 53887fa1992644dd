"""Data preparation, the QLoRA/LoRA SFT recipe, distillation and adapter export."""

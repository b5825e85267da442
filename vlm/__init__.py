"""LLaVA-1.5 assembly and training on transformers' LlavaForConditionalGeneration."""

"""The OpenAI fine-tuning API over the core: a fine-tuning job is one fine-tune job of the core."""
